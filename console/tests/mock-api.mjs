// An in-process stand-in for the engine's console API (docs/console-api.md), for the smoke test
// of the front end. It keeps to the documented shapes and enforces sessions, CSRF and roles the
// way the contract says, so the page is exercised against the contract and not against itself.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './lib.mjs';

export const USERS = {
  olivia: { password: 'olivia-secret-1', role: 'operator' },
  victor: { password: 'victor-secret-1', role: 'viewer' },
  ada: { password: 'ada-secret-1', role: 'admin' },
};

export const XSS = '<img src=x onerror="window.__xss=1">';

const sample = readFileSync(join(repoRoot, 'samples/messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7'), 'utf8')
  .split(/\r?\n|\r/)
  .filter(Boolean);

function mask(lines) {
  return lines.map((l) => {
    if (!l.startsWith('PID|')) return l;
    const f = l.split('|');
    f[3] = '***';
    f[5] = '***';
    f[6] = '***';
    f[7] = '****'; // PID-7, the birth date
    f[11] = '***';
    f[13] = '***';
    return f.join('|');
  });
}

function withNote(lines) {
  return [...lines, `NTE|1||${XSS}`];
}

export function createMock({ users = USERS } = {}) {
  const sessions = new Map();
  const sse = new Set();
  const requests = [];
  const state = {
    dashboard: {
      generated_at: new Date().toISOString(),
      routes: [
        { name: 'vxu', received: 3, accepted: 1, accepted_with_warnings: 1, rejected_by_izhub: 1, rejected_by_iis: 0, errored: 0, unresolved_errors: 2, rate_per_min: 0.6, p95_ms: 41 },
        { name: 'qbp', received: 0, accepted: 0, accepted_with_warnings: 0, rejected_by_izhub: 0, rejected_by_iis: 0, errored: 0, unresolved_errors: 0, rate_per_min: 0, p95_ms: null },
      ],
      destinations: [
        { name: 'ma-iis', received: 2, accepted: 1, accepted_with_warnings: 1, rejected_by_iis: 0, errored: 0, unresolved_errors: 0, queued: 4, oldest_queued_secs: 125, breaker: 'closed', paused: false, rate_per_min: 0.4, p95_ms: 38 },
        { name: 'pa-iis', received: 0, accepted: 0, accepted_with_warnings: 0, rejected_by_iis: 0, errored: 0, unresolved_errors: 1, queued: 0, oldest_queued_secs: null, breaker: 'open', paused: false, rate_per_min: 0, p95_ms: null },
      ],
    },
    attempts: [{ time: new Date(Date.now() - 60000).toISOString(), destination: 'ma-iis', result: 'delivered', class: 'accepted', answer: 'MSH|^~\\&|||||||ACK^V04|1|P|2.5.1\rMSA|AA|NIST-IZ-001.00\r' }],
    audit: [],
    resolved: [],
    reprocessed: [], // the journal entries that Reprocess created
  };
  const meta = {
    id: 7,
    time: new Date(Date.now() - 60000).toISOString(),
    listener: 'clinics',
    sender: 'X68',
    type: 'VXU^V04',
    control_id: 'NIST-IZ-001.00',
    patient_id: '***',
    route: 'vxu',
    destination: 'ma-iis',
    status: 'accepted_with_warnings',
    ack: 'AA',
    detections: ['ndc-mapped'],
    latency_ms: 35,
    resolved: false,
  };

  function detail(unmasked) {
    const lines = withNote(unmasked ? sample : mask(sample));
    const received = `\x0b${lines.join('\r')}\r\x1c\r`;
    const staged = lines.map((l) => (l.startsWith('RXA|') ? l.replace('140^Influenza, seasonal, injectable, preservative free^CVX', '140^Influenza, seasonal, injectable, preservative free^CVX~49281-0418-50^Fluzone^NDC') : l));
    return {
      meta: { ...meta, patient_id: unmasked ? 'D26376273' : '***' },
      received,
      stages: [
        { plugin: 'route_by_jurisdiction', verdict: 'route_to', issues: [], changed: false, text: null },
        { plugin: 'validate_iz', verdict: 'continue', issues: [{ severity: 'warning', code: 'obx-funding', location: 'OBX-5', text: `Funding source ${XSS}` }], changed: false, text: null },
        { plugin: 'ndc_to_cvx', verdict: 'continue', issues: [], changed: true, text: staged.join('\r') },
        { plugin: 'race_ethnicity', verdict: 'continue', issues: [], changed: false, text: null },
      ],
      issues: [{ severity: 'warning', code: 'obx-funding', location: 'OBX-5', text: 'Funding source' }],
      answer: 'MSH|^~\\&|izhub||X68||20260101||ACK^V04^ACK|A1|P|2.5.1\rMSA|AA|NIST-IZ-001.00|Accepted with warnings\rERR||OBX^1^5|0^Message accepted^HL70357|W|||Funding source\r',
      answer_decoded: { msa: { code: 'AA', control_id: 'NIST-IZ-001.00', text: 'Accepted with warnings' }, err: [{ location: 'OBX^1^5', code: '0', severity: 'W', text: 'Funding source' }] },
      attempts: state.attempts,
      masked: !unmasked,
      journaled: true,
    };
  }

  function json(res, status, body, headers = {}) {
    res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  }

  function session(req) {
    const m = /(?:^|;\s*)izhub_session=([^;]+)/.exec(req.headers.cookie ?? '');
    return m ? sessions.get(m[1]) : undefined;
  }

  async function body(req) {
    let s = '';
    for await (const chunk of req) s += chunk;
    try {
      return s ? JSON.parse(s) : {};
    } catch {
      return null;
    }
  }

  function audit(s, action, target, result = 'ok') {
    state.audit.unshift({ id: state.audit.length + 1, time: new Date().toISOString(), user: s.user, action, target, result });
  }

  async function handle(req, res, url) {
    const path = url.pathname;
    requests.push({ method: req.method, path, query: url.search, csrf: req.headers['x-csrf-token'] ?? null });
    if (!path.startsWith('/api/')) return json(res, 404, { error: 'not found' });

    if (req.method === 'GET' && path === '/api/login/options') return json(res, 200, { sso: null });
    if (req.method === 'POST' && path === '/api/login') {
      const b = await body(req);
      const u = b && users[b.user];
      if (!u || u.password !== b.password) return json(res, 401, { error: 'wrong user or password' });
      const token = randomBytes(16).toString('hex');
      const s = { user: b.user, role: u.role, csrf: randomBytes(16).toString('hex') };
      sessions.set(token, s);
      return json(res, 200, s, { 'Set-Cookie': `izhub_session=${token}; HttpOnly; SameSite=Strict; Path=/` });
    }
    const s = session(req);
    if (!s) return json(res, 401, { error: 'not logged in' });
    if (req.method === 'POST' && req.headers['x-csrf-token'] !== s.csrf) return json(res, 403, { error: 'missing or wrong CSRF token' });
    const operator = s.role === 'operator' || s.role === 'admin';

    if (req.method === 'POST' && path === '/api/logout') {
      for (const [k, v] of sessions) if (v === s) sessions.delete(k);
      return json(res, 200, { ok: true });
    }
    if (req.method === 'GET' && path === '/api/me') return json(res, 200, { ...s, routes: null, destinations: null });
    if (req.method === 'GET' && path === '/api/dashboard') return json(res, 200, state.dashboard);
    if (req.method === 'GET' && path === '/api/events') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
      res.write(': connected\n\n');
      const client = { res, session: s };
      sse.add(client);
      req.on('close', () => sse.delete(client));
      return;
    }
    if ((req.method === 'GET' && path === '/api/messages') || (req.method === 'POST' && path === '/api/messages/search')) {
      const filter = req.method === 'POST' ? ((await body(req)) ?? {}) : {};
      if (requests.length > 0) requests[requests.length - 1].body = filter;
      const cid = req.method === 'POST' ? filter.control_id : url.searchParams.get('control_id');
      const items = [...state.reprocessed, meta].filter((x) => !cid || x.control_id === cid);
      return json(res, 200, { items, next: null });
    }
    const m = /^\/api\/messages\/([^/]+)(?:\/(reprocess|retry|resend))?$/.exec(path);
    if (m) {
      if (m[1] !== String(meta.id)) return json(res, 404, { error: 'no such message' });
      if (req.method === 'GET' && !m[2]) {
        const unmask = url.searchParams.get('unmask') === 'true';
        if (unmask && !operator) return json(res, 403, { error: 'unmasking needs the operator role' });
        if (unmask) audit(s, 'unmask', `message ${meta.id}`);
        return json(res, 200, detail(unmask));
      }
      if (req.method === 'POST' && m[2]) {
        if (!operator) {
          audit(s, m[2], `message ${meta.id}`, 'forbidden');
          return json(res, 403, { error: `${m[2]} needs the operator role` });
        }
        audit(s, m[2], `message ${meta.id}`);
        if (m[2] === 'reprocess') {
          state.attempts = [...state.attempts, { time: new Date().toISOString(), destination: 'ma-iis', result: 'delivered', class: 'accepted', answer: 'MSH|^~\\&|||||||ACK^V04|2|P|2.5.1\rMSA|AA|NIST-IZ-001.00\r' }];
          const id = 8 + state.reprocessed.length;
          state.reprocessed.unshift({ ...meta, id, time: new Date().toISOString() });
          return json(res, 200, { ok: true, id });
        }
        return json(res, 409, { error: `message ${meta.id} is not ${m[2] === 'retry' ? 'queued' : 'a dead letter'}` });
      }
    }
    if (req.method === 'POST' && path === '/api/errors/resolve') {
      if (!operator) return json(res, 403, { error: 'needs the operator role' });
      const b = await body(req);
      state.resolved.push(b);
      for (const r of state.dashboard.routes) if (b.route === r.name) r.unresolved_errors = 0;
      for (const d of state.dashboard.destinations) if (b.destination === d.name) d.unresolved_errors = 0;
      audit(s, 'resolve', JSON.stringify(b));
      return json(res, 200, { ok: true, resolved: 2 });
    }
    if (req.method === 'POST' && path === '/api/reprocess') {
      if (!operator) return json(res, 403, { error: 'needs the operator role' });
      const b = await body(req);
      return json(res, 200, b.confirm ? { ok: true, reprocessed: 1 } : { count: 1 });
    }
    const d = /^\/api\/destinations\/([^/]+)\/(pause|resume|reset-breaker)$/.exec(path);
    if (req.method === 'POST' && d) {
      if (!operator) return json(res, 403, { error: 'needs the operator role' });
      const dest = state.dashboard.destinations.find((x) => x.name === d[1]);
      if (!dest) return json(res, 404, { error: 'no such destination' });
      if (d[2] === 'pause') dest.paused = true;
      if (d[2] === 'resume') dest.paused = false;
      if (d[2] === 'reset-breaker') dest.breaker = 'closed';
      return json(res, 200, { ok: true });
    }
    if (req.method === 'GET' && path === '/api/codesets') {
      return json(res, 200, [
        { name: 'cvx', source: 'CDC', date: '2025-01-02', count: 281, age_days: 200, stale: true },
        { name: 'mvx', source: 'CDC', date: '2026-01-02', count: 120, age_days: 10, stale: false },
      ]);
    }
    if (req.method === 'GET' && path === '/api/quality') {
      return json(res, 200, {
        days: Number(url.searchParams.get('days') ?? 30),
        senders: [
          {
            sender: 'X68',
            messages: 3,
            rejected: 1,
            by_day: [
              {
                day: '2026-01-01',
                messages: 3,
                rejected: 1,
                completeness: { race_reported: 2, race_complete: 1, ethnicity_reported: 2, ethnicity_complete: 2 },
              },
            ],
            top_detections: [
              {
                id: 'patient-birth-date-missing',
                messages: 1,
                example_id: 7,
                example: {
                  id: 7,
                  control_id: 'M7',
                  location: 'PID-1-7',
                  text: 'The patient birth date is required. [patient-birth-date-missing]',
                  segment: 'PID|1||***||***^***',
                },
              },
            ],
          },
        ],
      });
    }
    if (req.method === 'GET' && path === '/api/quality/report') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      return res.end('<!doctype html><title>report</title><h1>report</h1>');
    }
    if (req.method === 'GET' && path === '/api/audit') {
      if (s.role !== 'admin') return json(res, 403, { error: 'the audit log needs the admin role' });
      return json(res, 200, { items: state.audit });
    }
    return json(res, 404, { error: `no ${req.method} ${path}` });
  }

  return {
    state,
    requests,
    handle: (req, res, url) =>
      handle(req, res, url).catch((e) => {
        if (!res.headersSent) json(res, 500, { error: String(e) });
      }),
    emit(event, data) {
      for (const c of sse) c.res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    sseClients: () => sse.size,
    expireSessions() {
      sessions.clear();
      for (const c of sse) c.res.end();
      sse.clear();
    },
    closeStreams() {
      for (const c of sse) c.res.end();
      sse.clear();
    },
  };
}
