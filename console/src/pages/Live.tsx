import { useEffect, useState } from 'preact/hooks';
import type { FlowEvent } from '../api';
import { flow, FLOW_MAX, onChange, setPaused, sseState } from '../events';
import { fmtTime, go, labelOf } from '../util';

const OUTCOMES = ['accepted', 'accepted_with_warnings', 'rejected_by_izhub', 'rejected_by_iis', 'errored', 'queued'];

function distinct(rows: FlowEvent[], key: 'route' | 'sender'): string[] {
  return [...new Set(rows.map((r) => r[key] ?? '').filter(Boolean))].sort();
}

export function Live() {
  const [, setTick] = useState(0);
  const [route, setRoute] = useState('');
  const [sender, setSender] = useState('');
  const [outcome, setOutcome] = useState('');

  useEffect(() => {
    const off = onChange(() => setTick((t) => t + 1));
    setTick((t) => t + 1); // rows may have arrived between the first render and this effect
    return off;
  }, []);

  const rows = flow.rows.filter(
    (r) => (!route || r.route === route) && (!sender || r.sender === sender) && (!outcome || r.outcome === outcome),
  );
  const state = sseState();

  return (
    <main>
      <h1>Live flow</h1>
      <div class="toolbar">
        <button type="button" data-testid="flow-pause" onClick={() => setPaused(!flow.paused)}>
          {flow.paused ? `Resume (${flow.pending.length} new)` : 'Pause'}
        </button>
        <label>
          Route{' '}
          <select value={route} data-testid="flow-filter-route" onChange={(e) => setRoute((e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {distinct(flow.rows, 'route').map((r) => (
              <option key={r}>{r}</option>
            ))}
          </select>
        </label>
        <label>
          Sender{' '}
          <select value={sender} data-testid="flow-filter-sender" onChange={(e) => setSender((e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {distinct(flow.rows, 'sender').map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Outcome{' '}
          <select value={outcome} data-testid="flow-filter-outcome" onChange={(e) => setOutcome((e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {OUTCOMES.map((o) => (
              <option key={o} value={o}>
                {labelOf(o)}
              </option>
            ))}
          </select>
        </label>
        <span class="muted">
          {rows.length} shown, newest first; the latest {FLOW_MAX} are kept. Stream: {state}
          {flow.paused ? ', paused' : ''}
        </span>
      </div>
      <table class="grid flow">
        <thead>
          <tr>
            <th>Time</th>
            <th>Sender</th>
            <th>Type</th>
            <th>MSH-10</th>
            <th>Route</th>
            <th>Destination</th>
            <th>Outcome</th>
            <th>Latency ms</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.id}:${r.time}:${r.outcome}`} data-testid="flow-row" class={`click o-${r.outcome}`} onClick={() => go(`/messages/${encodeURIComponent(String(r.id))}`)}>
              <td>{fmtTime(r.time)}</td>
              <td>{r.sender}</td>
              <td>{r.type}</td>
              <td data-testid="flow-control-id">{r.control_id}</td>
              <td>{r.route ?? ''}</td>
              <td>{r.destination ?? ''}</td>
              <td data-testid="flow-outcome">
                {labelOf(r.outcome)}
                {r.ack ? ` (${r.ack})` : ''}
              </td>
              <td class="n">{r.latency_ms ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {rows.length === 0 && <p class="muted">No messages yet{flow.rows.length ? ' match the filters' : ''}.</p>}
    </main>
  );
}
