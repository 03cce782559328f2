import { useEffect, useState } from 'preact/hooks';
import { api, errorMessage, query } from '../api';
import type { Day, Quality, SenderQuality } from '../api';
import { Bars, ErrorBox } from '../components';

const pct = (n: number, of: number) => (of > 0 ? `${Math.round((100 * n) / of)}%` : '–');

/** Messages and rejections per day, as bars. */
function Trend({ days }: { days: Day[] }) {
  return (
    <Bars
      testid="quality-trend"
      label="Messages and rejections by day"
      bars={days.map((d) => ({
        key: d.day,
        all: d.messages,
        bad: d.rejected,
        title: `${d.day}: ${d.messages} messages, ${d.rejected} rejected (${pct(d.rejected, d.messages)})`,
      }))}
    />
  );
}

function SenderSection({ q }: { q: SenderQuality }) {
  return (
    <section data-testid="quality-sender-report">
      <h2>{q.sender}</h2>
      <p>
        {q.messages} messages, {q.rejected} rejected ({pct(q.rejected, q.messages)}). Printable report for this sender:{' '}
        <a href={`/api/quality/report${query({ sender: q.sender, format: 'html' })}`} target="_blank" rel="noopener">
          HTML
        </a>{' '}
        ·{' '}
        <a href={`/api/quality/report${query({ sender: q.sender, format: 'csv' })}`} download>
          CSV
        </a>
      </p>
      <h3>Trend by day</h3>
      <Trend days={q.by_day} />
      <h3>Top detections</h3>
      {q.top_detections.length === 0 ? (
        <p class="muted">None.</p>
      ) : (
        <table class="grid" data-testid="quality-detections">
          <thead>
            <tr>
              <th>Detection</th>
              <th>Messages affected</th>
              <th>Example (masked)</th>
            </tr>
          </thead>
          <tbody>
            {q.top_detections.map((d) => (
              <tr key={d.id}>
                <td>{d.id}</td>
                <td>{d.messages}</td>
                <td>
                  <a href={`#/messages/${d.example_id}`}>message {d.example_id}</a>
                  {d.example && (
                    <>
                      {d.example.location && <> at {d.example.location}</>}
                      {d.example.text && <div>{d.example.text}</div>}
                      {d.example.segment && (
                        <pre class="raw wrap" data-testid="quality-example">
                          {d.example.segment}
                        </pre>
                      )}
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Race and ethnicity completeness</h3>
      <table class="grid" data-testid="quality-completeness">
        <thead>
          <tr>
            <th>Day</th>
            <th>Messages</th>
            <th>Rejected</th>
            <th>Race complete</th>
            <th>Ethnicity complete</th>
          </tr>
        </thead>
        <tbody>
          {q.by_day.map((d) => (
            <tr key={d.day}>
              <td>{d.day}</td>
              <td>{d.messages}</td>
              <td>{d.rejected}</td>
              <td title={`${d.completeness.race_complete} of ${d.completeness.race_reported} checked`}>
                {pct(d.completeness.race_complete, d.completeness.race_reported)}
              </td>
              <td title={`${d.completeness.ethnicity_complete} of ${d.completeness.ethnicity_reported} checked`}>
                {pct(d.completeness.ethnicity_complete, d.completeness.ethnicity_reported)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function Quality() {
  const [days, setDays] = useState(30);
  const [sender, setSender] = useState('');
  const [senders, setSenders] = useState<SenderQuality[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function load() {
    setError(null);
    try {
      const body = await api<Quality>('GET', `/api/quality${query({ sender: sender.trim(), days })}`);
      setSenders(body.senders ?? []);
    } catch (e) {
      setError(errorMessage(e));
    }
  }

  useEffect(() => {
    load();
  }, [days]);

  return (
    <main>
      <h1>Data quality</h1>
      <p class="muted">
        Rejections per sending facility, with the detections behind them and a masked example of each; race and ethnicity completeness as the
        plugins reported it.
      </p>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          load();
        }}
      >
        <label>
          Sender (MSH-4){' '}
          <input value={sender} data-testid="quality-sender" onInput={(e) => setSender((e.target as HTMLInputElement).value)} placeholder="all" />
        </label>
        <label>
          Days{' '}
          <select value={String(days)} onChange={(e) => setDays(Number((e.target as HTMLSelectElement).value))}>
            {[1, 7, 30, 90].map((d) => (
              <option key={d} value={String(d)}>
                {d}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Show</button>
      </form>
      <ErrorBox error={error} />
      {senders && senders.length === 0 && <p class="muted">No data for this period.</p>}
      {senders?.map((q) => <SenderSection key={q.sender} q={q} />)}
    </main>
  );
}
