// Helpers shared by the console's browser tests.
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

export const consoleDir = join(dirname(fileURLToPath(import.meta.url)), '..');
export const repoRoot = join(consoleDir, '..');

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Headless Chromium from the system package (no browser download). */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install it with "apt-get install -y chromium" (or set CHROMIUM=/path/to/chromium)`);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    throw new Error('playwright-core is not installed: run "npm ci" in console/ first');
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
}

/** A free TCP port on 127.0.0.1 (bound and released; good enough for a test). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '': 'text/plain; charset=utf-8',
};

/**
 * An HTTP server that serves dist/ at /console/ like the engine does, and hands every other
 * request to `fallback(req, res)`.
 */
export async function serveConsole(distDir, fallback, { port: listenPort = 0 } = {}) {
  if (!existsSync(join(distDir, 'index.html'))) throw new Error(`${distDir}/index.html is missing: run "npm run build" in console/ first`);
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/console') {
      res.writeHead(308, { Location: '/console/' }).end();
      return;
    }
    if (url.pathname.startsWith('/console/')) {
      const rel = normalize(url.pathname.slice('/console/'.length) || 'index.html');
      if (rel.startsWith('..') || rel.includes('\0')) {
        res.writeHead(400).end();
        return;
      }
      const file = join(distDir, rel);
      if (!existsSync(file)) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, {
        'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
        'Content-Security-Policy': "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        'X-Content-Type-Options': 'nosniff',
      });
      res.end(readFileSync(file));
      return;
    }
    fallback(req, res, url);
  });
  const port = await new Promise((resolve) => server.listen(listenPort, '127.0.0.1', () => resolve(server.address().port)));
  return { server, port, base: `http://127.0.0.1:${port}` };
}

/** Collects uncaught page errors and failed console errors so a test can assert there were none. */
export function watchPage(page, sink) {
  page.on('pageerror', (e) => sink.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]|Failed to load resource/.test(m.text())) sink.push(`console error: ${m.text()}`);
  });
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The interfaces of console/src/api.ts: name → fields, each { optional }.
 * Only what the console reads of the engine's JSON: `interface X { a: T; b?: T; }`
 * at the top level, fields at the first level of braces.
 */
export function apiInterfaces(source) {
  const out = {};
  const re = /export interface (\w+) \{\n([\s\S]*?)\n\}/g;
  for (const m of source.matchAll(re)) {
    const fields = {};
    let depth = 0;
    for (const line of m[2].split('\n')) {
      const field = depth === 0 ? /^ {2}(\w+)(\?)?:/.exec(line) : null;
      if (field) fields[field[1]] = { optional: field[2] === '?' };
      depth += (line.match(/\{/g) ?? []).length - (line.match(/\}/g) ?? []).length;
    }
    out[m[1]] = fields;
  }
  return out;
}

/**
 * What differs between a JSON object the engine sent and the interface the
 * console declares for it: fields it lacks, fields it has that the console
 * does not declare.
 */
export function drift(name, value, fields) {
  const problems = [];
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return [`${name}: not an object: ${JSON.stringify(value)?.slice(0, 80)}`];
  }
  for (const [field, { optional }] of Object.entries(fields)) {
    if (!optional && !(field in value)) problems.push(`${name}.${field}: declared in api.ts, missing from the engine's answer`);
  }
  for (const key of Object.keys(value)) {
    if (!(key in fields)) problems.push(`${name}.${key}: sent by the engine, not declared in api.ts`);
  }
  return problems;
}
