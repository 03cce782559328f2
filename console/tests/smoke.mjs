// Quick browser check of the built console against an in-process mock of the API contract
// (tests/mock-api.mjs), without the engine: node tests/smoke.mjs (after npm run build).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { join } from 'node:path';
import { consoleDir, launchChromium, serveConsole, watchPage } from './lib.mjs';
import { createMock, USERS, XSS } from './mock-api.mjs';

let mock, server, base, browser, context, page;
const problems = [];
const CONTROL_ID = 'NIST-IZ-001.00';

async function login(p, user) {
  await p.goto(`${base}/console/`);
  await p.getByTestId('login-form').waitFor({ timeout: 5000 });
  await p.getByTestId('login-user').fill(user);
  await p.getByTestId('login-password').fill(USERS[user].password);
  await p.getByTestId('login-submit').click();
  await p.getByTestId('who').waitFor({ timeout: 5000 });
}

async function waitLive(p) {
  await p.waitForFunction(() => document.querySelector('[data-testid="sse-status"]')?.textContent === 'live', null, { timeout: 5000 });
}

function flowEvent(n, outcome = 'accepted') {
  return { id: 100 + n, time: new Date().toISOString(), listener: 'clinics', sender: 'X68', type: 'VXU^V04', control_id: `CTRL-${n}`, route: 'vxu', destination: 'ma-iis', outcome, ack: 'AA', latency_ms: 12 };
}

before(async () => {
  mock = createMock();
  ({ server, base } = await serveConsole(join(consoleDir, 'dist'), mock.handle));
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  watchPage(page, problems);
});

after(async () => {
  await browser?.close().catch(() => {});
  mock?.closeStreams();
  server?.closeAllConnections?.();
  server?.close();
});

test('the app loads and shows the login form', async () => {
  await page.goto(`${base}/console/`);
  await page.getByTestId('login-form').waitFor({ timeout: 5000 });
  assert.equal(await page.title(), 'izhub console');
});

test('a wrong password is refused visibly', async () => {
  await page.getByTestId('login-user').fill('olivia');
  await page.getByTestId('login-password').fill('wrong');
  await page.getByTestId('login-submit').click();
  const err = page.getByTestId('error');
  await err.waitFor({ timeout: 5000 });
  assert.match(await err.textContent(), /Wrong user name or password/);
});

test('the operator logs in and sees the dashboard', async () => {
  await login(page, 'olivia');
  await page.getByTestId('route-vxu-received').waitFor({ timeout: 5000 });
  assert.equal(await page.getByTestId('route-vxu-received').textContent(), '3');
  assert.equal(await page.getByTestId('dest-ma-iis-queued').textContent(), '4');
  assert.equal(await page.getByTestId('dest-ma-iis-oldest_queued_secs').textContent(), '2 min');
  assert.equal(await page.getByTestId('dest-pa-iis-breaker').textContent(), 'open');
  assert.equal(await page.getByTestId('route-vxu-unresolved_errors').textContent(), '2');
  assert.ok(await page.getByText('Queued: waiting for delivery to the IIS').isVisible());
});

test('the dashboard follows the dashboard event', async () => {
  await waitLive(page);
  const d = structuredClone(mock.state.dashboard);
  d.routes[0].received = 9;
  mock.emit('dashboard', d);
  await page.waitForFunction(() => document.querySelector('[data-testid="route-vxu-received"]')?.textContent === '9', null, { timeout: 2000 });
});

test('Resolve posts the route with the CSRF token', async () => {
  page.once('dialog', (dlg) => dlg.accept());
  await page.getByTestId('route-vxu-resolve').click();
  await page.getByTestId('done').waitFor({ timeout: 5000 });
  assert.deepEqual(mock.state.resolved.at(-1), { route: 'vxu' });
  const req = mock.requests.findLast((r) => r.path === '/api/errors/resolve');
  assert.ok(req.csrf, 'X-CSRF-Token was sent');
  // The dashboard reloads after the action: wait for it, not for a moment.
  await page.getByTestId('route-vxu-unresolved_errors').waitFor({ state: 'detached', timeout: 5000 });
});

test('the live flow shows new rows at once, newest first; pause and filters work', async () => {
  await page.getByTestId('nav-live').click();
  await waitLive(page);
  mock.emit('message', flowEvent(1));
  const t0 = Date.now();
  await page.getByTestId('flow-row').filter({ hasText: 'CTRL-1' }).waitFor({ timeout: 1000 });
  assert.ok(Date.now() - t0 < 1000);
  mock.emit('message', flowEvent(2, 'rejected_by_izhub'));
  await page.getByTestId('flow-row').filter({ hasText: 'CTRL-2' }).waitFor({ timeout: 1000 });
  assert.equal(await page.getByTestId('flow-control-id').first().textContent(), 'CTRL-2');

  await page.getByTestId('flow-pause').click();
  mock.emit('message', flowEvent(3));
  await page.getByText('Resume (1 new)').waitFor({ timeout: 2000 });
  assert.equal(await page.getByTestId('flow-row').filter({ hasText: 'CTRL-3' }).count(), 0);
  await page.getByTestId('flow-pause').click();
  await page.getByTestId('flow-row').filter({ hasText: 'CTRL-3' }).waitFor({ timeout: 1000 });

  await page.getByTestId('flow-filter-outcome').selectOption('rejected_by_izhub');
  assert.equal(await page.getByTestId('flow-row').count(), 1);
  await page.getByTestId('flow-filter-outcome').selectOption('');
  assert.equal(await page.getByTestId('flow-row').count(), 3);
});

test('search by MSH-10 opens the message; tree, masking, control characters, diff, escaping', async () => {
  await page.getByTestId('nav-messages').click();
  await page.getByTestId('search-control_id').fill(CONTROL_ID);
  await page.getByTestId('search-patient_id').fill('D26376273');
  await page.getByTestId('search-submit').click();
  await page.getByTestId('message-row').first().waitFor({ timeout: 5000 });
  // The search goes in a POST body: identifiers stay out of URLs and server logs.
  const req = mock.requests.findLast((r) => r.path === '/api/messages/search');
  assert.equal(req.method, 'POST');
  assert.equal(req.query, '');
  assert.equal(req.body.control_id, 'NIST-IZ-001.00');
  assert.equal(req.body.patient_id, 'D26376273');
  assert.equal(new URL(page.url()).hash, '#/messages', 'search values stay out of the page URL');

  await page.getByTestId('message-row').first().click();
  await page.waitForFunction(() => location.hash === '#/messages/7');
  await page.getByText('PID-7 Date/Time of Birth').waitFor({ timeout: 5000 });
  const birth = await page.getByTestId('field-PID-7').getByTestId('field-value').textContent();
  assert.notEqual(birth, '20070706');
  assert.ok(!(await page.getByTestId('raw').textContent()).includes('20070706'));
  assert.ok(!page.url().includes('D26376273'));

  const plain = await page.getByTestId('raw').textContent();
  assert.ok(!plain.includes('↵'));
  assert.ok(plain.startsWith('MSH|'), 'framing bytes are left out of the plain view');
  await page.getByTestId('show-control').check();
  const shown = await page.getByTestId('raw').textContent();
  assert.ok(shown.startsWith('<VT>MSH|'), shown.slice(0, 40));
  assert.ok(shown.includes('↵\nPID|'));
  assert.ok(shown.includes('<FS>↵'));

  await page.getByText('RXA-5 Administered Code').first().waitFor({ timeout: 2000 });
  assert.equal(await page.getByTestId('diff').count(), 1);
  assert.equal(await page.getByTestId('msa').locator('dd').first().textContent(), 'AA');
  assert.equal(await page.getByTestId('attempt').count(), 1);

  assert.ok((await page.getByTestId('field-NTE-3').textContent()).includes(XSS), 'markup in a message is shown as text');
  assert.equal(await page.locator('img').count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
});

test('Reprocess sends the CSRF token and shows the new attempt', async () => {
  await page.getByTestId('reprocess').click();
  await page.getByTestId('done').waitFor({ timeout: 5000 });
  assert.match(await page.getByTestId('done').textContent(), /^Reprocess: ok/);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="attempt"]').length === 2, null, { timeout: 2000 });
  const req = mock.requests.findLast((r) => r.path === '/api/messages/7/reprocess');
  assert.ok(req.csrf);
});

test('Unmask shows PHI and says so; a refused action shows the server error', async () => {
  await page.getByTestId('unmask').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="field-PID-7"] [data-testid="field-value"]')?.textContent === '20070706', null, { timeout: 5000 });
  assert.match(await page.getByTestId('masked').textContent(), /unmasked/);
  await page.getByTestId('retry').click();
  await page.getByTestId('error').waitFor({ timeout: 5000 });
  assert.match(await page.getByTestId('error').textContent(), /^409 /);
});

test('a viewer has no action buttons and the server refuses their POST with 403', async () => {
  const ctx = await browser.newContext();
  try {
    const p = await ctx.newPage();
    watchPage(p, problems);
    await login(p, 'victor');
    await p.goto(`${base}/console/#/messages/7`);
    await p.getByText('PID-7 Date/Time of Birth').waitFor({ timeout: 5000 });
    assert.equal(await p.getByTestId('reprocess').count(), 0);
    assert.equal(await p.getByTestId('nav-audit').count(), 0);
    const status = await p.evaluate(async () => {
      const me = await (await fetch('/api/me', { credentials: 'same-origin' })).json();
      const r = await fetch('/api/messages/7/reprocess', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': me.csrf } });
      return r.status;
    });
    assert.equal(status, 403);
    await p.goto(`${base}/console/#/audit`);
    await p.getByTestId('error').waitFor({ timeout: 5000 });
    assert.match(await p.getByTestId('error').textContent(), /^403 /);
  } finally {
    await ctx.close();
  }
});

test('code sets flag stale sets; data quality shows each sender with report links', async () => {
  await page.goto(`${base}/console/#/codesets`);
  await page.getByTestId('codeset-cvx').waitFor({ timeout: 5000 });
  assert.match(await page.getByTestId('codeset-cvx').textContent(), /stale/);
  assert.doesNotMatch(await page.getByTestId('codeset-mvx').textContent(), /stale/);
  await page.goto(`${base}/console/#/quality`);
  const report = page.getByTestId('quality-sender-report');
  await report.waitFor({ timeout: 5000 });
  assert.match(await report.textContent(), /X68/);
  assert.match(await report.textContent(), /patient-birth-date-missing/);
  assert.equal(await report.locator('a[href="/api/quality/report?sender=X68&format=csv"]').count(), 1);
  // The trend has a bar per day, the rejected part drawn over it.
  assert.equal(await report.getByTestId('quality-trend').locator('rect.bar-all').count(), 1);
  assert.equal(await report.getByTestId('quality-trend').locator('rect.bar-bad').count(), 1);
  assert.equal(await report.getByTestId('quality-example').textContent(), 'PID|1||***||***^***');
  assert.match(await report.getByTestId('quality-completeness').textContent(), /50%/);
});

test('when the session ends, the next request shows the login form', async () => {
  mock.expireSessions();
  await page.goto(`${base}/console/#/dashboard`);
  await page.getByTestId('login-form').waitFor({ timeout: 5000 });
});

test('no script errors on any page', () => {
  assert.deepEqual(problems, []);
});
