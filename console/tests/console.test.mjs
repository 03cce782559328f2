// The console end to end, in a real browser, against the real engine:
//
//   IZHUB_BIN=/path/to/izhub node console/tests/console.test.mjs
//
// Starts two simulated IIS, an OpenID provider (npm oidc-provider, in this process; ./sso.mjs) and
// `izhub serve` in a temp dir (config from samples/demo/izhub.toml with an [admin] address, two
// users and [admin.oidc]), drives headless system Chromium through the console,
// and kills every child process at the end, also on failure. Optional: IZHUB_PLUGINS (default
// <repo>/build/plugins), CHROMIUM (default /usr/bin/chromium), IZHUB_SCREENSHOT_DIR (default
// <repo>/docs), IZHUB_KEEP_TMP=1 to keep the temp dir.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { apiInterfaces, drift, freePort, launchChromium, repoRoot, sleep, watchPage } from './lib.mjs';
import { oidcToml, startProvider } from './sso.mjs';

const IZHUB_BIN = process.env.IZHUB_BIN;
const PLUGINS = process.env.IZHUB_PLUGINS ?? join(repoRoot, 'build/plugins');
const CODESETS = join(repoRoot, 'samples/codesets');
const DEMO_CONFIG = join(repoRoot, 'samples/demo/izhub.toml');
const SCREENSHOTS = process.env.IZHUB_SCREENSHOT_DIR ?? join(repoRoot, 'docs');
const VXU = join(repoRoot, 'samples/messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7');
const CONTROL_ID = 'NIST-IZ-001.00';
const BIRTH_DATE = '20070706'; // PID-7 in that file

const OPERATOR = { name: 'olivia', role: 'operator', password: 'olivia-console-test-1' };
const VIEWER = { name: 'victor', role: 'viewer', password: 'victor-console-test-1' };

// Single sign-on: a real OpenID provider with three accounts; two of their groups map to roles.
const SSO_CLIENT = 'izhub-console';
const SSO_SECRET_ENV = 'IZHUB_TEST_OIDC_SECRET';
const SSO_ACCOUNTS = { olga: ['izhub-operators', 'staff'], vera: ['izhub-vxu-viewers'], nina: ['staff'] };
const SSO_ROLES = [
  { group: 'izhub-operators', role: 'operator' },
  { group: 'izhub-vxu-viewers', role: 'viewer', routes: ['vxu'] },
];
let provider;

const children = [];
const problems = [];
let tmp;
let ports;
let base;
let browser;
let page;
let messageId;
let failed = false;

// ---------------------------------------------------------------------------------------------
// The user configuration is being built by the auth engineer: this is the one place that writes
// it. Each user: name, role, password_hash (an argon2id PHC string from `izhub user hash`).
function adminUsersToml(users) {
  return users
    .map((u) => `\n[[admin.users]]\nname = ${JSON.stringify(u.name)}\nrole = ${JSON.stringify(u.role)}\npassword_hash = ${JSON.stringify(u.hash)}\n`)
    .join('');
}

/** samples/demo/izhub.toml with this run's ports, absolute plugin and code set paths, and the users. */
function writeConfig(dir, users, extraAdmin = '') {
  let text = readFileSync(DEMO_CONFIG, 'utf8');
  const replace = (from, to) => {
    assert.ok(text.includes(from), `samples/demo/izhub.toml no longer contains ${from}: update writeConfig() in ${import.meta.url}`);
    text = text.split(from).join(to);
  };
  replace('listen = "127.0.0.1:9480"', `listen = "127.0.0.1:${ports.admin}"${adminUsersToml(users)}${extraAdmin}`);
  replace('listen = "127.0.0.1:2575"', `listen = "127.0.0.1:${ports.mllp}"`);
  replace('mllp = "127.0.0.1:2601"', `mllp = "127.0.0.1:${ports.ma}"`);
  replace('mllp = "127.0.0.1:2602"', `mllp = "127.0.0.1:${ports.pa}"`);
  replace('dir = "../codesets"', `dir = ${JSON.stringify(CODESETS)}`);
  replace('"../../build/plugins/', JSON.stringify(`${PLUGINS}/`).slice(0, -1));
  replace('log = "../../build/demo-messages.db"', `log = ${JSON.stringify(join(dir, 'messages.db'))}`);
  const file = join(dir, 'izhub.toml');
  writeFileSync(file, text);
  return file;
}

// ---------------------------------------------------------------------------------------------
// Child processes: every one is recorded and killed at the end, also on failure or Ctrl-C.

function start(name, args) {
  const log = join(tmp, `${name}.log`);
  const out = createWriteStream(log);
  const child = spawn(IZHUB_BIN, args, { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  const entry = { name, child, log, exited: null };
  child.on('exit', (code, signal) => (entry.exited = { code, signal }));
  child.on('error', (e) => (entry.exited = { code: null, signal: null, error: e.message }));
  children.push(entry);
  return entry;
}

function logTail(entry, lines = 30) {
  try {
    return readFileSync(entry.log, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function stopAll() {
  const alive = children.filter((c) => !c.exited && c.child.exitCode === null);
  for (const c of alive) c.child.kill('SIGTERM');
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && alive.some((c) => c.child.exitCode === null && c.child.signalCode === null)) await sleep(50);
  for (const c of alive) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
}

process.on('exit', () => {
  for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await stopAll();
    process.exit(130);
  });
}

/** Runs the binary to completion, with optional standard input; resolves {code, stdout, stderr}. */
function run(args, input) {
  return new Promise((resolve, reject) => {
    const child = spawn(IZHUB_BIN, args, { cwd: tmp, stdio: ['pipe', 'pipe', 'pipe'] });
    const entry = { name: `izhub ${args[0]}`, child, log: null, exited: null };
    children.push(entry);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

async function waitPort(port, entry, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (entry.exited) throw new Error(`${what} exited (${JSON.stringify(entry.exited)}) before listening on ${port}:\n${logTail(entry)}`);
    const ok = await new Promise((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms:\n${logTail(entry)}`);
}

async function hashPassword(password) {
  const r = await run(['user', 'hash', '--password-stdin'], password);
  const hash = r.stdout.trim().split('\n').pop() ?? '';
  assert.equal(r.code, 0, `izhub user hash --password-stdin failed (${r.code}): ${r.stderr}`);
  assert.match(hash, /^\$argon2id\$/, `izhub user hash printed no argon2id PHC string: ${JSON.stringify(r.stdout)}`);
  return hash;
}

// ---------------------------------------------------------------------------------------------
// The engine-side facts the test relies on, each in one place so they are easy to align.

/** Sum of the answers the engine sent for a route, from /metrics (Prometheus text). */
function answersForRoute(metricsText, route) {
  // The counter family is registered as "answers_out" (izhub_answers_out_total{route,code});
  // izhub_answers_total is accepted too.
  const re = /^izhub_answers(?:_out)?_total\{([^}]*)\}\s+([0-9.eE+-]+)/gm;
  let sum = 0;
  let seen = 0;
  for (const m of metricsText.matchAll(re)) {
    if (new RegExp(`(^|,)route="${route}"(,|$)`).test(m[1])) {
      sum += Number(m[2]);
      seen++;
    }
  }
  assert.ok(seen > 0, `/metrics has no izhub_answers_out_total (or izhub_answers_total) series for route="${route}":\n${metricsText.split('\n').filter((l) => l.includes('answers')).join('\n')}`);
  return sum;
}

/** After Reprocess on the detail page: the engine ran the message again and delivered it. */
async function assertReprocessed(p, attemptsBefore) {
  const done = p.getByTestId('done');
  const error = p.getByTestId('error');
  await done.or(error).first().waitFor({ timeout: 15000 });
  if (await error.isVisible()) assert.fail(`Reprocess answered an error: ${await error.textContent()}`);
  const doneText = await done.textContent();
  // The answer was ok, or the detail shows a new delivery attempt.
  const attemptsNow = await p.getByTestId('attempt').count();
  assert.ok(/^Reprocess: ok/.test(doneText) || attemptsNow > attemptsBefore, `Reprocess: "${doneText}", attempts ${attemptsBefore} → ${attemptsNow}`);
  // The search finds the message twice: received once, reprocessed once.
  let items = [];
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const r = await p.evaluate(async (cid) => {
      const res = await fetch(`/api/messages?control_id=${encodeURIComponent(cid)}`, { credentials: 'same-origin' });
      return { status: res.status, body: await res.json().catch(() => null) };
    }, CONTROL_ID);
    assert.equal(r.status, 200, `GET /api/messages?control_id=${CONTROL_ID}: ${JSON.stringify(r.body)}`);
    items = r.body.items;
    if (items.length >= 2) break;
    await sleep(250);
  }
  assert.equal(items.length, 2, `GET /api/messages?control_id=${CONTROL_ID} after Reprocess gave ${items.length} item(s): ${JSON.stringify(items)}`);
  // The original links to the message its reprocessing made.
  const newest = Math.max(...items.map((m) => m.id));
  const links = p.getByTestId('reprocess-links');
  await links.waitFor({ timeout: 5000 });
  assert.match(await links.textContent(), new RegExp(`Reprocessed as message ${newest}\\b`));
}

// ---------------------------------------------------------------------------------------------

async function login(p, user) {
  await p.goto(`${base}/console/`);
  await p.getByTestId('login-form').waitFor({ timeout: 10000 });
  await p.getByTestId('login-user').fill(user.name);
  await p.getByTestId('login-password').fill(user.password);
  await p.getByTestId('login-submit').click();
  const who = p.getByTestId('who');
  const error = p.getByTestId('error');
  await who.or(error).first().waitFor({ timeout: 10000 });
  if (await error.isVisible()) assert.fail(`logging in as ${user.name} failed: ${await error.textContent()}`);
  assert.match(await who.textContent(), new RegExp(`${user.name} \\(${user.role}\\)`));
}

async function shot(p, name) {
  const file = join(SCREENSHOTS, name);
  await p.screenshot({ path: file });
  console.log(`# screenshot ${file}`);
}

/** Each step records failure, so that the temp dir and logs are kept and pointed at. */
function step(name, fn) {
  test(name, { timeout: 90000 }, async () => {
    try {
      await fn();
    } catch (e) {
      failed = true;
      if (page) await page.screenshot({ path: join(tmp, `failure-${name.slice(0, 3).replace(/\W/g, '')}.png`) }).catch(() => {});
      throw e;
    }
  });
}

before(async () => {
  try {
    await setUp();
  } catch (e) {
    failed = true;
    throw e;
  }
});

async function setUp() {
  assert.ok(IZHUB_BIN, 'set IZHUB_BIN to the izhub binary, e.g. IZHUB_BIN=~/.cache/izhub/target/release/izhub node console/tests/console.test.mjs');
  assert.ok(existsSync(IZHUB_BIN), `IZHUB_BIN=${IZHUB_BIN} does not exist`);
  for (const p of ['route_by_jurisdiction.wasm', 'validate_iz.wasm', 'ndc_to_cvx.wasm', 'race_ethnicity.wasm']) {
    assert.ok(existsSync(join(PLUGINS, p)), `${join(PLUGINS, p)} is missing: build the plugins (./dev.sh builds them into build/plugins) or set IZHUB_PLUGINS`);
  }
  tmp = mkdtempSync(join(tmpdir(), 'izhub-console-'));
  console.log(`# temp dir ${tmp}`);
  ports = { ma: await freePort(), pa: await freePort(), mllp: await freePort(), admin: await freePort(), idp: await freePort() };
  base = `http://127.0.0.1:${ports.admin}`;
  const redirect = `${base}/api/oidc/callback`;
  const secret = randomBytes(24).toString('hex');
  provider = await startProvider({ port: ports.idp, clientId: SSO_CLIENT, clientSecret: secret, redirect, consoleUrl: `${base}/console/`, accounts: SSO_ACCOUNTS });
  process.env[SSO_SECRET_ENV] = secret; // the engine inherits it
  const sso = oidcToml({ issuer: provider.issuer, clientId: SSO_CLIENT, secretEnv: SSO_SECRET_ENV, redirect, roles: SSO_ROLES });

  const ma = start('sim-ma', ['sim-iis', '--listen', `127.0.0.1:${ports.ma}`, '--name', 'MAIIS']);
  const pa = start('sim-pa', ['sim-iis', '--listen', `127.0.0.1:${ports.pa}`, '--name', 'PAIIS']);
  await waitPort(ports.ma, ma, 'sim-iis MAIIS', 15000);
  await waitPort(ports.pa, pa, 'sim-iis PAIIS', 15000);

  const users = [];
  for (const u of [OPERATOR, VIEWER]) users.push({ ...u, hash: await hashPassword(u.password) });
  const config = writeConfig(tmp, users, sso);

  const engine = start('engine', ['serve', '--config', config]);
  // Plugins are compiled at start: allow time for a cold cache on a slow machine.
  await waitPort(ports.admin, engine, 'izhub serve (admin)', 180000);
  await waitPort(ports.mllp, engine, 'izhub serve (MLLP)', 60000);

  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  watchPage(page, problems);
}

after(async () => {
  await browser?.close().catch(() => {});
  await provider?.close().catch(() => {});
  await stopAll();
  if (failed || process.env.IZHUB_KEEP_TMP) {
    console.log(`# kept ${tmp} (config, logs, failure screenshots)`);
    const engine = children.find((c) => c.name === 'engine');
    if (failed && engine) console.log(`# engine log (last lines):\n${logTail(engine, 40).replace(/^/gm, '#   ')}`);
  } else if (tmp) {
    rmSync(tmp, { recursive: true, force: true });
  }
});

step('(a) the operator logs in', async () => {
  await login(page, OPERATOR);
});

step('(b) the live flow shows a message within 1 s of its answer', async () => {
  await page.getByTestId('nav-live').click();
  await page.getByTestId('sse-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 10000 });
  const r = await run(['send', '--to', `127.0.0.1:${ports.mllp}`, VXU]);
  assert.equal(r.code, 0, `izhub send failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  const sentAt = Date.now();
  const row = page.getByTestId('flow-row').filter({ has: page.getByTestId('flow-control-id').getByText(CONTROL_ID, { exact: true }) });
  try {
    await row.first().waitFor({ timeout: 1000 });
  } catch {
    assert.fail(`no live-flow row with MSH-10 ${CONTROL_ID} within 1 s of izhub send returning (answer: ${r.stdout.trim().slice(0, 200)})`);
  }
  console.log(`# row shown ${Date.now() - sentAt} ms after the send returned`);
  await shot(page, 'console-live.png');
});

step('(f) the dashboard counts for route vxu what /metrics counts', async () => {
  await page.getByTestId('nav-dashboard').click();
  const cell = page.getByTestId('route-vxu-received');
  await cell.waitFor({ timeout: 10000 });
  let metrics;
  let expected;
  let shown;
  const deadline = Date.now() + 5000; // the dashboard event comes at most once a second
  do {
    let res = await fetch(`${base}/metrics`);
    if (res.status === 401 || res.status === 403) {
      // If /metrics needs the session, read it from the page.
      metrics = await page.evaluate(async () => (await fetch('/metrics', { credentials: 'same-origin' })).text());
    } else {
      assert.equal(res.status, 200, `GET /metrics: ${res.status}`);
      metrics = await res.text();
    }
    expected = answersForRoute(metrics, 'vxu');
    shown = Number((await cell.textContent()).trim());
    if (shown === expected) break;
    await sleep(250);
  } while (Date.now() < deadline);
  assert.ok(expected >= 1, `/metrics counts ${expected} answers for route vxu after one message`);
  assert.equal(shown, expected, `dashboard route-vxu-received shows ${shown}, /metrics izhub_answers_out_total{route="vxu"} sums to ${expected}`);
  // The traffic charts: the route's messages drawn as bars over the last
  // hour and the last seven days, with the same total as the table.
  for (const period of ['traffic-hour', 'traffic-days']) {
    await page.getByTestId(period).click();
    const chart = page.getByTestId('chart-route-vxu');
    await chart.waitFor({ timeout: 10000 });
    const total = page.getByTestId('chart-route-vxu-total');
    const until = Date.now() + 20000; // the charts are read every 15 s
    let text = '';
    do {
      text = (await total.textContent()).trim();
      if (text.startsWith(`${shown} received`)) break;
      await sleep(500);
    } while (Date.now() < until);
    assert.ok(text.startsWith(`${shown} received`), `${period}: the chart says "${text}", the table ${shown}`);
    assert.ok(await chart.locator('rect.bar-all').count() >= 1, `${period}: no bar drawn`);
    const box = await chart.boundingBox();
    assert.ok(box && box.width > 100 && box.height > 20, `${period}: the chart is ${JSON.stringify(box)}`);
  }
  await page.getByTestId('traffic-hour').click();
  await shot(page, 'console-dashboard.png');
});

step('(c) search by MSH-10, open the message: field names, PHI masked', async () => {
  await page.getByTestId('nav-messages').click();
  await page.getByTestId('search-control_id').fill(CONTROL_ID);
  await page.getByTestId('search-submit').click();
  const row = page.getByTestId('message-row').filter({ hasText: CONTROL_ID });
  const error = page.getByTestId('error');
  await row.first().or(error).first().waitFor({ timeout: 10000 });
  if (await error.isVisible()) assert.fail(`search failed: ${await error.textContent()}`);
  await row.first().click();
  await page.waitForURL(/#\/messages\/[^/]+$/, { timeout: 5000 });
  messageId = decodeURIComponent(new URL(page.url()).hash.replace('#/messages/', ''));
  assert.ok(!page.url().includes(CONTROL_ID), 'the page URL carries the id only');
  const label = page.getByText('PID-7 Date/Time of Birth', { exact: true });
  await label.first().waitFor({ timeout: 10000 });
  const value = (await page.getByTestId('field-PID-7').first().getByTestId('field-value').textContent()) ?? '';
  assert.notEqual(value, BIRTH_DATE, 'PID-7 is masked');
  assert.ok(!value.includes(BIRTH_DATE), `PID-7 is masked, shown "${value}"`);
  assert.ok(!(await page.getByTestId('raw').textContent()).includes(BIRTH_DATE), 'the raw text is masked');
  await shot(page, 'console-message.png');
});

step('(d) Reprocess delivers the message again', async () => {
  assert.ok(messageId, 'step (c) found no message');
  const attemptsBefore = await page.getByTestId('attempt').count();
  await page.getByTestId('reprocess').click();
  await assertReprocessed(page, attemptsBefore);
});

step('(e) the server refuses a viewer\'s Reprocess with 403', async () => {
  assert.ok(messageId, 'step (c) found no message');
  const context = await browser.newContext();
  try {
    const p = await context.newPage();
    watchPage(p, problems);
    await login(p, VIEWER);
    const r = await p.evaluate(async (id) => {
      const me = await (await fetch('/api/me', { credentials: 'same-origin' })).json();
      const res = await fetch(`/api/messages/${encodeURIComponent(id)}/reprocess`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'X-CSRF-Token': me.csrf },
      });
      return { status: res.status, body: await res.text(), role: me.role, csrf: !!me.csrf };
    }, String(messageId));
    assert.equal(r.role, 'viewer');
    assert.ok(r.csrf, 'GET /api/me gave the viewer a CSRF token');
    assert.equal(r.status, 403, `POST /api/messages/${messageId}/reprocess as a viewer: ${r.status} ${r.body}`);
    await p.goto(`${base}/console/#/messages/${encodeURIComponent(String(messageId))}`);
    await p.getByText('PID-7 Date/Time of Birth', { exact: true }).first().waitFor({ timeout: 10000 });
    assert.equal(await p.getByTestId('reprocess').count(), 0, 'a viewer sees no Reprocess button');
  } finally {
    await context.close();
  }
});

step('(h) the engine\'s answers have the fields console/src/api.ts declares', async () => {
  assert.ok(messageId, 'step (c) found no message');
  const declared = apiInterfaces(readFileSync(join(repoRoot, 'console/src/api.ts'), 'utf8'));
  for (const name of ['Me', 'Dashboard', 'RouteStats', 'DestinationStats', 'MessagePage', 'MessageMeta', 'MessageDetail', 'Stage', 'Attempt', 'Codeset', 'Quality', 'SenderQuality', 'Day', 'Completeness', 'Detection', 'Example', 'ReprocessCount', 'ReprocessDone', 'Reprocessed', 'Traffic', 'Period', 'Series']) {
    assert.ok(declared[name] && Object.keys(declared[name]).length > 0, `api.ts declares ${name}`);
  }
  const got = await page.evaluate(async (id) => {
    const get = async (path) => (await fetch(path, { credentials: 'same-origin' })).json();
    const { csrf } = await get('/api/me');
    const post = async (path, body) => (await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: JSON.stringify(body),
    })).json();
    const detail = await get(`/api/messages/${encodeURIComponent(id)}`);
    const filter = { control_id: detail.meta.control_id };
    return {
      count: await post('/api/reprocess', { filter, confirm: false }),
      done: await post('/api/reprocess', { filter, confirm: true }),
      one: await post(`/api/messages/${encodeURIComponent(id)}/reprocess`, {}),
      me: await get('/api/me'),
      dashboard: await get('/api/dashboard'),
      page: await get('/api/messages?limit=5'),
      detail: await get(`/api/messages/${encodeURIComponent(id)}`),
      codesets: await get('/api/codesets'),
      quality: await get('/api/quality?days=1'),
      traffic: await get('/api/dashboard/history'),
    };
  }, String(messageId));
  const problems = [
    ...drift('Me', got.me, declared.Me),
    ...drift('Dashboard', got.dashboard, declared.Dashboard),
    ...got.dashboard.routes.flatMap((r) => drift('RouteStats', r, declared.RouteStats)),
    ...got.dashboard.destinations.flatMap((d) => drift('DestinationStats', d, declared.DestinationStats)),
    ...drift('MessagePage', got.page, declared.MessagePage),
    ...got.page.items.flatMap((m) => drift('MessageMeta', m, declared.MessageMeta)),
    ...drift('MessageDetail', got.detail, declared.MessageDetail),
    ...drift('MessageDetail.meta', got.detail.meta, declared.MessageMeta),
    ...got.detail.stages.flatMap((s) => drift('Stage', s, declared.Stage)),
    ...got.detail.attempts.flatMap((a) => drift('Attempt', a, declared.Attempt)),
    ...got.codesets.flatMap((c) => drift('Codeset', c, declared.Codeset)),
    ...drift('Traffic', got.traffic, declared.Traffic),
    ...[got.traffic.last_hour, got.traffic.last_days].flatMap((p) => [
      ...drift('Period', p, declared.Period),
      ...[...p.routes, ...p.destinations].flatMap((x) => drift('Series', x, declared.Series)),
    ]),
    ...drift('Quality', got.quality, declared.Quality),
    ...drift('ReprocessCount', got.count, declared.ReprocessCount),
    ...drift('ReprocessDone', got.done, declared.ReprocessDone),
    ...drift('Reprocessed', got.one, declared.Reprocessed),
    ...got.quality.senders.flatMap((q) => [
      ...drift('SenderQuality', q, declared.SenderQuality),
      ...q.by_day.flatMap((d) => [...drift('Day', d, declared.Day), ...drift('Completeness', d.completeness, declared.Completeness)]),
      ...q.top_detections.flatMap((t) => [
        ...drift('Detection', t, declared.Detection),
        ...(t.example ? drift('Example', t.example, declared.Example) : []),
      ]),
    ]),
  ];
  assert.ok(got.traffic.last_hour.routes.length > 0 && got.dashboard.routes.length > 0 && got.page.items.length > 0 && got.detail.stages.length > 0 && got.codesets.length > 0
    && got.quality.senders.length > 0,
    'every list checked has something in it');
  assert.deepEqual(problems, []);
});

step('(i) data quality and code sets fit a 1,440 px window, and each set shows its own date', async () => {
  await page.setViewportSize({ width: 1440, height: 900 });
  try {
    for (const hash of ['#/quality', '#/codesets']) {
      await page.goto(`${base}/console/${hash}`);
      await page.locator('main table.grid').first().waitFor({ timeout: 10000 });
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 1440, `${hash} is ${width} px wide`);
    }
    // Each set shows its own date, not when its file was copied (a fresh
    // clone's files are all modified today).
    for (const name of ['hl7-0001', 'cvx', 'ndc']) {
      const cells = await page.locator(`[data-testid="codeset-${name}"] td`).allInnerTexts();
      assert.match(cells[2], /^\d{4}-\d{2}-\d{2}$/, `${name}: ${cells.join(' | ')}`);
      assert.ok(Number(cells[4]) > 0, `${name} is ${cells[4]} days old: ${cells.join(' | ')}`);
    }
    const aira = await page.locator('[data-testid="codeset-hl7-0001"] td').allInnerTexts();
    assert.equal(aira[2], '2025-12-09');
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});

step('(g) no script errors in the pages', async () => {
  assert.deepEqual(problems, []);
});

// ---------------------------------------------------------------------------------------------
// Single sign-on through the OpenID provider started in setUp.

/** From wherever `p` is, through the provider's login and consent pages until it is back on the console. */
async function throughProvider(p, account) {
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    await p.waitForLoadState('load').catch(() => {});
    if (p.url().startsWith(`${base}/console/`)) return;
    if (p.url().startsWith(provider.issuer)) {
      const login = p.locator('input[name="login"]');
      const consent = p.locator('input[name="prompt"][value="consent"]');
      if (await login.count()) {
        await login.fill(account);
        await p.locator('input[name="password"]').fill('any password: the test provider takes it');
        await p.locator('button[type="submit"]').first().click();
        await login.waitFor({ state: 'detached', timeout: 10000 });
        continue;
      }
      if (await consent.count()) {
        await p.locator('button[type="submit"]').first().click();
        await consent.waitFor({ state: 'detached', timeout: 10000 });
        continue;
      }
    }
    await sleep(100);
  }
  assert.fail(`single sign-on as ${account} did not come back to the console; the page is at ${p.url()}`);
}

/** Clicks the login page's single sign-on button in `p` and signs in at the provider as `account`. */
async function ssoLogin(p, account) {
  await p.goto(`${base}/console/`);
  await p.getByTestId('login-sso').click();
  await throughProvider(p, account);
}

async function meOf(p) {
  return p.evaluate(async () => {
    const res = await fetch('/api/me', { credentials: 'same-origin' });
    return { status: res.status, body: await res.json().catch(() => null) };
  });
}

/** What the login page says after a refused sign-in; the page has no session. */
async function assertRefused(p, pattern) {
  const error = p.getByTestId('error');
  await error.waitFor({ timeout: 10000 });
  assert.match(await error.textContent(), pattern);
  assert.ok(!p.url().includes('sso_error'), `the error word is dropped from the address: ${p.url()}`);
  assert.equal((await meOf(p)).status, 401, 'a refused sign-in opens no session');
}

/** Runs `fn` with a page of a fresh browser context (its own cookies). */
async function inNewContext(fn) {
  const context = await browser.newContext();
  try {
    await fn(await context.newPage(), context);
  } finally {
    await context.close();
  }
}

step('(j) single sign-on: the role comes from the groups claim; logging out ends the provider session too', async () => {
  await inNewContext(async (p) => {
    await ssoLogin(p, 'olga');
    await p.getByTestId('who').waitFor({ timeout: 10000 });
    assert.match(await p.getByTestId('who').textContent(), /olga \(operator\)/);
    const me = await meOf(p);
    assert.equal(me.status, 200);
    assert.equal(me.body.role, 'operator');
    assert.equal(me.body.routes, null);
    assert.ok(me.body.csrf, 'the SSO session has a CSRF token');
    const audit = await p.evaluate(async () => (await fetch('/api/audit', { credentials: 'same-origin' })).status);
    assert.equal(audit, 403, 'an operator is not an administrator');
    // Logging out goes through the provider's sign-out page and back to the console.
    await p.getByTestId('logout').click();
    await p.waitForURL((u) => u.toString().startsWith(provider.issuer), { timeout: 10000 });
    await p.getByRole('button', { name: 'Yes, sign me out' }).click();
    await p.waitForURL((u) => u.toString().startsWith(`${base}/console/`), { timeout: 10000 });
    await p.getByTestId('login-form').waitFor({ timeout: 10000 });
    assert.equal((await meOf(p)).status, 401, 'the console session has ended');
    // The provider's session ended too: signing in again asks for the login.
    await p.getByTestId('login-sso').click();
    await p.locator('input[name="login"]').waitFor({ timeout: 10000 });
  });
});

step('(k) single sign-on: a group maps to a role and routes; a user in no mapped group is refused', async () => {
  await inNewContext(async (p) => {
    await ssoLogin(p, 'vera');
    await p.getByTestId('who').waitFor({ timeout: 10000 });
    assert.match(await p.getByTestId('who').textContent(), /vera \(viewer\) · routes: vxu/);
    const me = await meOf(p);
    assert.deepEqual([me.body.role, me.body.routes, me.body.destinations], ['viewer', ['vxu'], null]);
  });
  await inNewContext(async (p) => {
    await ssoLogin(p, 'nina');
    await assertRefused(p, /none of your groups may use this console/);
  });
});

/** Begins a sign-in in `context` (its cookie binds the sign-in to that browser): the provider's authorization URL. */
async function beginSignIn(context) {
  const r = await context.request.get(`${base}/api/oidc/login`, { maxRedirects: 0 });
  assert.equal(r.status(), 303, `GET /api/oidc/login: ${r.status()}`);
  const location = r.headers().location;
  assert.ok(location?.startsWith(`${provider.issuer}/auth?`), location);
  const url = new URL(location);
  for (const p of ['state', 'nonce', 'code_challenge']) assert.ok(url.searchParams.get(p), `${p} in ${location}`);
  assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
  return url;
}

step('(l) single sign-on: a changed state, a callback in another browser and a replayed callback are refused', async () => {
  // (Playwright does not route requests reached by a redirect: the sign-in is begun by hand and its
  // authorization URL changed before the browser goes there.)
  await inNewContext(async (p, context) => {
    const auth = await beginSignIn(context);
    auth.searchParams.set('state', `${auth.searchParams.get('state')}x`);
    await p.goto(auth.toString());
    await throughProvider(p, 'olga');
    await assertRefused(p, /did not start in this browser, or was already used/);
  });
  // Begun in one browser, finished in another (a sign-in planted on someone else): refused.
  await inNewContext(async (_p, attacker) => {
    const auth = await beginSignIn(attacker);
    await inNewContext(async (victim) => {
      await victim.goto(auth.toString());
      await throughProvider(victim, 'olga');
      await assertRefused(victim, /did not start in this browser, or was already used/);
    });
  });
  // A fresh sign-in, then its callback once more: the first opens a session, the replay is refused.
  await inNewContext(async (p, context) => {
    const seen = [];
    p.on('request', (r) => {
      if (r.url().startsWith(`${base}/api/oidc/callback`)) seen.push(r.url());
    });
    await ssoLogin(p, 'olga');
    await p.getByTestId('who').waitFor({ timeout: 10000 });
    assert.equal(seen.length, 1, `one callback: ${seen.length}`);
    const replay = await context.request.get(seen[0], { maxRedirects: 0 });
    assert.match(replay.headers().location, /sso_error=state$/);
  });
});

step('(m) single sign-on: a nonce changed on the way and an expired ID token are refused', async () => {
  await inNewContext(async (p, context) => {
    // The provider is asked with another nonce than the one the engine sent: its ID token carries that one.
    const auth = await beginSignIn(context);
    auth.searchParams.set('nonce', 'a-nonce-the-engine-never-sent');
    await p.goto(auth.toString());
    await throughProvider(p, 'olga');
    await assertRefused(p, /answered for another sign-in/);
  });
  await inNewContext(async (p) => {
    // A provider whose clock is two hours behind issues an ID token that expired an hour ago.
    provider.setTokenClockSkew(2 * 3600);
    try {
      await ssoLogin(p, 'olga');
      await assertRefused(p, /token has expired/);
    } finally {
      provider.setTokenClockSkew(0);
    }
  });
});
