import { useEffect, useState } from 'preact/hooks';
import { api, errorMessage, query } from '../api';
import { ErrorBox, JsonView } from '../components';

type SenderReport = { sender: string; data: Record<string, unknown> };

const SENDER_KEYS = ['sender', 'sender_facility', 'facility', 'name'];

/**
 * The API gives, per sending facility, rejections (top detections, by day, messages affected,
 * masked examples) and race/ethnicity completeness by day. The page accepts a list of objects
 * naming their sender, {"senders":[...]}, or an object keyed by sender, and shows each sender's
 * data as tables.
 */
function bySender(body: unknown): SenderReport[] {
  const fromList = (list: unknown[]): SenderReport[] =>
    list
      .filter((x): x is Record<string, unknown> => !!x && typeof x === 'object')
      .map((x) => {
        const key = SENDER_KEYS.find((k) => typeof x[k] === 'string');
        const data = { ...x };
        if (key) delete data[key];
        return { sender: key ? String(x[key]) : '(unknown sender)', data };
      });
  if (Array.isArray(body)) return fromList(body);
  if (body && typeof body === 'object') {
    const o = body as Record<string, unknown>;
    if (Array.isArray(o.senders)) return fromList(o.senders);
    return Object.entries(o)
      .filter(([, v]) => v && typeof v === 'object' && !Array.isArray(v))
      .map(([sender, data]) => ({ sender, data: data as Record<string, unknown> }));
  }
  return [];
}

export function Quality() {
  const [days, setDays] = useState(30);
  const [sender, setSender] = useState('');
  const [reports, setReports] = useState<SenderReport[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function load() {
    setError(null);
    try {
      setReports(bySender(await api<unknown>('GET', `/api/quality${query({ sender: sender.trim(), days })}`)));
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
      {reports && reports.length === 0 && <p class="muted">No data for this period.</p>}
      {reports?.map((r) => (
        <section key={r.sender} data-testid="quality-sender-report">
          <h2>{r.sender}</h2>
          <p>
            Printable report for this sender:{' '}
            <a href={`/api/quality/report${query({ sender: r.sender, format: 'html' })}`} target="_blank" rel="noopener">
              HTML
            </a>{' '}
            ·{' '}
            <a href={`/api/quality/report${query({ sender: r.sender, format: 'csv' })}`} download>
              CSV
            </a>
          </p>
          <JsonView value={r.data} />
        </section>
      ))}
    </main>
  );
}
