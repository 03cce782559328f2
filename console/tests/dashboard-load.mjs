// Times the dashboard page in a real browser against a running engine:
// from navigation until every route's row is drawn. Used by
// `./dev.sh bench-console` (200 routes, 1,000,000 logged messages).
//
//   node console/tests/dashboard-load.mjs http://127.0.0.1:9495 USER PASSWORD LAST_ROUTE [RUNS]
import { launchChromium } from './lib.mjs';

const [base, user, password, lastRoute, runsArg] = process.argv.slice(2);
if (!base || !user || !password || !lastRoute) {
  console.error('usage: dashboard-load.mjs BASE_URL USER PASSWORD LAST_ROUTE [RUNS]');
  process.exit(2);
}
const runs = Number(runsArg ?? 10);

const browser = await launchChromium();
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/console/`);
  await page.getByTestId('login-form').waitFor({ timeout: 10000 });
  await page.getByTestId('login-user').fill(user);
  await page.getByTestId('login-password').fill(password);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('who').waitFor({ timeout: 10000 });
  const cell = `route-${lastRoute}-received`;
  const times = [];
  for (let i = 0; i < runs + 1; i++) {
    // A fresh load each time: the page, its script, the API call and the drawing.
    await page.goto('about:blank');
    const started = performance.now();
    await page.goto(`${base}/console/#/dashboard`);
    await page.getByTestId(cell).waitFor({ timeout: 10000 });
    const took = performance.now() - started;
    if (i > 0) times.push(took); // the first load warms the browser's cache
  }
  const rows = await page.locator('[data-testid="route-table"] tbody tr').count();
  times.sort((a, b) => a - b);
  const median = times[Math.floor((times.length - 1) / 2)];
  console.log(
    `  ${('dashboard page in chromium (' + rows + ' routes)').padEnd(46)} median ${median.toFixed(1).padStart(6)} ms   worst ${times[times.length - 1].toFixed(1).padStart(6)} ms`,
  );
} finally {
  await browser.close();
}
