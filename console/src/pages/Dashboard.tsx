import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, canAct, errorMessage, type Cluster, type Dashboard as DashboardData, type Me, type Period, type Series, type Traffic } from '../api';
import { ActionButton, Bars, ErrorBox } from '../components';
import { onDashboard } from '../events';
import { fmtAge, fmtNum, fmtTime } from '../util';

type Col<T> = { key: keyof T & string; label: string; fmt?: (v: unknown) => string };

const num = (v: unknown) => fmtNum(v as number);
const rate = (v: unknown) => fmtNum(v as number, 1);

const ROUTE_COLS: Col<DashboardData['routes'][number]>[] = [
  { key: 'received', label: 'Received' },
  { key: 'accepted', label: 'Accepted' },
  { key: 'accepted_with_warnings', label: 'Accepted with warnings' },
  { key: 'rejected_by_izhub', label: 'Rejected by izhub' },
  { key: 'rejected_by_iis', label: 'Rejected by the IIS' },
  { key: 'errored', label: 'Errored' },
  { key: 'rate_per_min', label: 'Rate/min', fmt: rate },
  { key: 'p95_ms', label: 'p95 ms' },
];

const DEST_COLS: Col<DashboardData['destinations'][number]>[] = [
  { key: 'received', label: 'Received' },
  { key: 'accepted', label: 'Accepted' },
  { key: 'accepted_with_warnings', label: 'Accepted with warnings' },
  { key: 'rejected_by_iis', label: 'Rejected by the IIS' },
  { key: 'errored', label: 'Errored' },
  { key: 'queued', label: 'Queued' },
  { key: 'oldest_queued_secs', label: 'Oldest queued', fmt: (v) => fmtAge(v as number | null) },
  { key: 'breaker', label: 'Breaker', fmt: (v) => String(v ?? '') },
  { key: 'paused', label: 'Paused', fmt: (v) => (v ? 'paused' : '') },
  { key: 'rate_per_min', label: 'Rate/min', fmt: rate },
  { key: 'p95_ms', label: 'p95 ms' },
];

function StatsTable<T extends { name: string }>(props: {
  kind: 'route' | 'dest';
  title: string;
  rows: T[];
  cols: Col<T>[];
  actions?: (row: T) => ComponentChildren;
}) {
  return (
    <section>
      <h2>{props.title}</h2>
      {props.rows.length === 0 ? (
        <p class="muted">None configured.</p>
      ) : (
        <table class="grid stats" data-testid={`${props.kind}-table`}>
          <thead>
            <tr>
              <th>Name</th>
              {props.cols.map((c) => (
                <th key={c.key}>{c.label}</th>
              ))}
              {props.actions && <th>Actions</th>}
            </tr>
          </thead>
          <tbody>
            {props.rows.map((row) => (
              <tr key={row.name} class={(row as { breaker?: string }).breaker === 'open' ? 'warn' : ''}>
                <th scope="row">{row.name}</th>
                {props.cols.map((c) => (
                  <td key={c.key} class="n" data-testid={`${props.kind}-${row.name}-${c.key}`}>
                    {(c.fmt ?? num)(row[c.key])}
                  </td>
                ))}
                {props.actions && <td class="actions">{props.actions(row)}</td>}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** A bucket's start as the chart's hover text shows it: the time for minutes, day and hour for hours. */
function bucketLabel(ms: number, stepSecs: number): string {
  const d = new Date(ms);
  const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return stepSecs >= 3600 ? `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${hm}` : hm;
}

function Chart({ kind, series, period }: { kind: 'route' | 'dest'; series: Series; period: Period }) {
  const received = series.received.reduce((a, b) => a + b, 0);
  const rejected = series.rejected.reduce((a, b) => a + b, 0);
  const step = period.step_secs * 1000;
  const bars = series.received.map((all, i) => {
    const bad = series.rejected[i] ?? 0;
    const at = period.start_ms + i * step;
    return { key: String(at), all, bad, title: `${bucketLabel(at, period.step_secs)}: ${all} received, ${bad} rejected` };
  });
  const end = period.start_ms + series.received.length * step;
  return (
    <div class="chart">
      <h3>
        {kind === 'route' ? 'Route' : 'Destination'} {series.name}
      </h3>
      <p class="muted small" data-testid={`chart-${kind}-${series.name}-total`}>
        {fmtNum(received)} received, {fmtNum(rejected)} rejected
      </p>
      <Bars testid={`chart-${kind}-${series.name}`} label={`Messages and rejections of ${series.name}`} bars={bars} width={period.step_secs >= 3600 ? 2 : 5} height={48} />
      <div class="axis muted small">
        <span>{bucketLabel(period.start_ms, period.step_secs)}</span>
        <span>{bucketLabel(end, period.step_secs)}</span>
      </div>
    </div>
  );
}

/** Message rate and rejections over time, per route and destination. */
function TrafficCharts() {
  const [traffic, setTraffic] = useState<Traffic | null>(null);
  const [days, setDays] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    async function read() {
      try {
        const t = await api<Traffic>('GET', '/api/dashboard/history');
        if (live) {
          setTraffic(t);
          setError(null);
        }
      } catch (e) {
        if (live) setError(errorMessage(e));
      }
    }
    read();
    const t = setInterval(read, 15000);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, []);
  const period = traffic ? (days ? traffic.last_days : traffic.last_hour) : null;
  return (
    <section data-testid="traffic">
      <h2>Traffic</h2>
      <p class="toolbar">
        <button type="button" class={days ? '' : 'on'} aria-pressed={!days} data-testid="traffic-hour" onClick={() => setDays(false)}>
          Last hour, by minute
        </button>{' '}
        <button type="button" class={days ? 'on' : ''} aria-pressed={days} data-testid="traffic-days" onClick={() => setDays(true)}>
          Last 7 days, by hour
        </button>
        <span class="muted small"> Bars: messages received; red: rejected by izhub or the IIS.</span>
      </p>
      <ErrorBox error={error} />
      {period && (
        <div class="charts">
          {period.routes.map((s) => (
            <Chart key={`r-${s.name}`} kind="route" series={s} period={period} />
          ))}
          {period.destinations.map((s) => (
            <Chart key={`d-${s.name}`} kind="dest" series={s} period={period} />
          ))}
        </div>
      )}
    </section>
  );
}

export function Dashboard({ me }: { me: Me }) {
  const [data, setData] = useState<DashboardData | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [cluster, setCluster] = useState<Cluster | null>(null);
  const operator = canAct(me);

  // Nodes sharing the journal, read every 5 s (absent for one engine).
  useEffect(() => {
    let live = true;
    async function read() {
      try {
        const c = await api<{ cluster: Cluster | null }>('GET', '/api/cluster');
        if (live) setCluster(c.cluster);
      } catch {
        // The dashboard itself says when the engine cannot be reached.
      }
    }
    read();
    const t = setInterval(read, 5000);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, []);

  // The stream and the fetch may answer in either order: keep the newer snapshot.
  function newer(d: DashboardData) {
    setData((prev) => (prev && Date.parse(prev.generated_at) > Date.parse(d.generated_at) ? prev : d));
  }

  async function load() {
    try {
      newer(await api<DashboardData>('GET', '/api/dashboard'));
    } catch (e) {
      setError(errorMessage(e));
    }
  }

  useEffect(() => {
    load();
    return onDashboard(newer);
  }, []);

  async function post(path: string, body: unknown, what: string) {
    setDone(null);
    await api('POST', path, body);
    setDone(what);
    await load();
  }

  const unresolved = data
    ? [
        ...data.routes.filter((r) => r.unresolved_errors > 0).map((r) => ({ kind: 'route' as const, name: r.name, count: r.unresolved_errors })),
        ...data.destinations
          .filter((d) => d.unresolved_errors > 0)
          .map((d) => ({ kind: 'dest' as const, name: d.name, count: d.unresolved_errors })),
      ]
    : [];

  return (
    <main>
      <h1>Dashboard</h1>
      <ul class="defs">
        <li>Counts since the engine started; rate and p95 over the last 5 minutes.</li>
        <li>Queued: waiting for delivery to the IIS</li>
        <li>Rejected by izhub: answered with an error by izhub itself, never sent to the IIS.</li>
      </ul>
      <ErrorBox error={error} />
      {done && <p class="ok" data-testid="done">{done}</p>}
      {!data ? (
        !error && <p class="muted">Loading…</p>
      ) : (
        <>
          {data.nodes !== undefined && (
            <p class="muted small" data-testid="nodes-counted">
              Counts of {fmtNum(data.nodes)} nodes added up; queued is the shared queue; p95 is the highest node's.
              {data.unreachable && data.unreachable.length > 0 && (
                <span class="warn"> Not counted (did not answer): {data.unreachable.join(', ')}.</span>
              )}
            </p>
          )}
          <StatsTable kind="route" title="Routes" rows={data.routes} cols={ROUTE_COLS} />
          <StatsTable
            kind="dest"
            title="Destinations"
            rows={data.destinations}
            cols={DEST_COLS}
            actions={
              operator
                ? // Only a queued destination (commit mode) can be paused.
                  (d) =>
                    d.queued !== undefined && (
                    <>
                      <ActionButton
                        label={d.paused ? 'Resume' : 'Pause'}
                        testid={`dest-${d.name}-${d.paused ? 'resume' : 'pause'}`}
                        onError={setError}
                        run={() => post(`/api/destinations/${encodeURIComponent(d.name)}/${d.paused ? 'resume' : 'pause'}`, {}, `${d.name}: ${d.paused ? 'resumed' : 'paused'}.`)}
                      />
                      {d.breaker !== 'closed' && (
                        <ActionButton
                          label="Reset breaker"
                          testid={`dest-${d.name}-reset-breaker`}
                          onError={setError}
                          run={() => post(`/api/destinations/${encodeURIComponent(d.name)}/reset-breaker`, {}, `${d.name}: breaker reset.`)}
                        />
                      )}
                    </>
                    )
                : undefined
            }
          />
          <TrafficCharts />
          <section>
            <h2>Unresolved errors</h2>
            <p class="muted">Errors stay here, apart from the totals above, until someone resolves them.</p>
            {unresolved.length === 0 ? (
              <p data-testid="no-unresolved">None.</p>
            ) : (
              <table class="grid">
                <tbody>
                  {unresolved.map((u) => (
                    <tr key={`${u.kind}-${u.name}`}>
                      <th scope="row">
                        {u.kind === 'route' ? 'Route' : 'Destination'} {u.name}
                      </th>
                      <td class="n" data-testid={`${u.kind}-${u.name}-unresolved_errors`}>
                        {u.count}
                      </td>
                      <td>
                        {operator && (
                          <ActionButton
                            label="Resolve"
                            testid={`${u.kind}-${u.name}-resolve`}
                            confirm={`Mark the ${u.count} unresolved error(s) of ${u.name} resolved?`}
                            onError={setError}
                            run={() =>
                              post('/api/errors/resolve', u.kind === 'route' ? { route: u.name } : { destination: u.name }, `${u.name}: errors resolved.`)
                            }
                          />
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </section>
          {cluster && (
            <section>
              <h2>Cluster</h2>
              <p class="muted">
                Nodes sharing the journal; this node is {cluster.node}. A node's deliveries pass to the others when it has been silent for a lease ({fmtNum(cluster.lease_ms / 1000)} s). Outcomes refused by fencing here: {fmtNum(cluster.fenced)}.
              </p>
              <table class="grid" data-testid="cluster">
                <thead>
                  <tr>
                    <th>Node</th>
                    <th>Started</th>
                    <th>Last heartbeat</th>
                    <th>Leases held</th>
                  </tr>
                </thead>
                <tbody>
                  {cluster.nodes.map((n) => (
                    <tr key={n.id} class={n.heartbeat_age_ms > cluster.lease_ms ? 'warn' : ''}>
                      <th scope="row">{n.id}</th>
                      <td>{fmtTime(n.started_at)}</td>
                      <td>{fmtAge(n.heartbeat_age_ms / 1000)} ago</td>
                      <td class="n">{fmtNum(n.leases)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
          )}
          <p class="muted small">Updated {fmtTime(data.generated_at)}</p>
        </>
      )}
    </main>
  );
}
