import { useEffect, useState } from 'preact/hooks';
import { api, canAct, errorMessage, type Me, type MessageMeta, type MessagePage, type ReprocessCount, type ReprocessDone } from '../api';
import { ErrorBox } from '../components';
import { fmtTime, go, labelOf, localInputToRfc3339 } from '../util';

interface Form {
  from: string;
  to: string;
  sender: string;
  type: string;
  control_id: string;
  patient_id: string;
  status: string;
  route: string;
  destination: string;
  detection: string;
  contains: string;
}

const EMPTY: Form = {
  from: '',
  to: '',
  sender: '',
  type: '',
  control_id: '',
  patient_id: '',
  status: '',
  route: '',
  destination: '',
  detection: '',
  contains: '',
};

const STATUSES = ['accepted', 'accepted_with_warnings', 'rejected_by_izhub', 'rejected_by_iis', 'errored', 'queued', 'delivered', 'dead'];

// Kept in memory while the page is open, so that coming back from a message shows the same
// search; never in the URL (search values may be PHI, such as a patient id).
const saved = {
  form: { ...EMPTY } as Form,
  items: null as MessageMeta[] | null,
  next: null as MessagePage['next'],
  partial: false,
};

const PAGE = 50;

function filterOf(f: Form): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(f) as [keyof Form, string][]) {
    const value = k === 'from' || k === 'to' ? localInputToRfc3339(v) : v.trim();
    if (value) out[k] = value;
  }
  return out;
}

/** Client-side check of the server's rule for `contains`: From and To at most 24 hours apart. */
function containsProblem(f: Form): string | null {
  if (!f.contains.trim()) return null;
  const from = Date.parse(f.from);
  const to = Date.parse(f.to);
  if (Number.isNaN(from) || Number.isNaN(to)) return 'A text search ("contains") needs both From and To.';
  if (to < from) return 'To is before From.';
  if (to - from > 24 * 3600 * 1000) return 'A text search ("contains") can cover at most 24 hours between From and To.';
  return null;
}

function Input(props: { name: keyof Form; label: string; form: Form; set: (f: Form) => void; type?: 'text' | 'datetime-local'; list?: string; placeholder?: string }) {
  return (
    <label>
      {props.label}
      <input
        name={props.name}
        type={props.type ?? 'text'}
        list={props.list}
        placeholder={props.placeholder}
        value={props.form[props.name]}
        data-testid={`search-${props.name}`}
        onInput={(e) => props.set({ ...props.form, [props.name]: (e.target as HTMLInputElement).value })}
      />
    </label>
  );
}

export function Messages({ me }: { me: Me }) {
  const [form, setForm] = useState<Form>(saved.form);
  const [items, setItems] = useState<MessageMeta[] | null>(saved.items);
  const [next, setNext] = useState<MessagePage['next']>(saved.next);
  const [partial, setPartial] = useState(saved.partial);
  const [unreachable, setUnreachable] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [bulk, setBulk] = useState<{ count: number; filter: Record<string, string> } | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [names, setNames] = useState<{ routes: string[]; destinations: string[] }>({ routes: me.routes ?? [], destinations: me.destinations ?? [] });

  useEffect(() => {
    saved.form = form;
    saved.items = items;
    saved.next = next;
    saved.partial = partial;
  }, [form, items, next, partial]);

  useEffect(() => {
    // Route and destination names for the pickers.
    api<{ routes: { name: string }[]; destinations: { name: string }[] }>('GET', '/api/dashboard')
      .then((d) => setNames({ routes: d.routes.map((r) => r.name), destinations: d.destinations.map((x) => x.name) }))
      .catch(() => {});
  }, []);

  async function run(before: MessagePage['next'] | null) {
    const problem = containsProblem(form);
    if (problem) {
      setError(problem);
      return;
    }
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      // POST, so a patient id never travels in a URL.
      const page = await api<MessagePage>('POST', '/api/messages/search', { ...filterOf(form), before, limit: PAGE });
      setItems(before === null ? page.items : [...(items ?? []), ...page.items]);
      setNext(page.next);
      setPartial(!!page.partial);
      setUnreachable(page.unreachable ?? []);
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setBusy(false);
    }
  }

  async function bulkDryRun() {
    setError(null);
    setDone(null);
    try {
      const filter = filterOf(form);
      const r = await api<ReprocessCount>('POST', '/api/reprocess', { filter, confirm: false });
      setBulk({ count: r.count, filter });
    } catch (e) {
      setError(errorMessage(e));
    }
  }

  async function bulkConfirm() {
    if (!bulk) return;
    try {
      const r = await api<ReprocessDone>('POST', '/api/reprocess', { filter: bulk.filter, confirm: true });
      setDone(`Reprocessed ${r.reprocessed} message(s).`);
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setBulk(null);
    }
  }

  return (
    <main>
      <h1>Messages</h1>
      <form
        class="search"
        data-testid="search-form"
        onSubmit={(e) => {
          e.preventDefault();
          run(null);
        }}
      >
        <Input name="from" label="From" type="datetime-local" form={form} set={setForm} />
        <Input name="to" label="To" type="datetime-local" form={form} set={setForm} />
        <Input name="sender" label="Sender (MSH-4)" form={form} set={setForm} />
        <Input name="type" label="Type" form={form} set={setForm} placeholder="VXU^V04" />
        <Input name="control_id" label="MSH-10" form={form} set={setForm} />
        <Input name="patient_id" label="Patient id" form={form} set={setForm} />
        <Input name="status" label="Status" form={form} set={setForm} list="statuses" />
        <Input name="route" label="Route" form={form} set={setForm} list="routes" />
        <Input name="destination" label="Destination" form={form} set={setForm} list="destinations" />
        <Input name="detection" label="Detection" form={form} set={setForm} placeholder="patient-birth-date-missing" />
        <Input name="contains" label="Contains text" form={form} set={setForm} placeholder="needs From and To ≤ 24 h" />
        <datalist id="statuses">
          {STATUSES.map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
        <datalist id="routes">
          {names.routes.map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
        <datalist id="destinations">
          {names.destinations.map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
        <div class="buttons">
          <button type="submit" disabled={busy} data-testid="search-submit">
            {busy ? 'Searching…' : 'Search'}
          </button>
          <button
            type="button"
            onClick={() => {
              setForm({ ...EMPTY });
              setItems(null);
              setNext(null);
            }}
          >
            Clear
          </button>
          {canAct(me) && (
            <button type="button" data-testid="bulk-reprocess" onClick={bulkDryRun} title="Counts the messages that match first">
              Reprocess all matching…
            </button>
          )}
        </div>
      </form>
      <ErrorBox error={error} />
      {done && <p class="ok" data-testid="done">{done}</p>}
      {bulk && (
        <div class="confirm" data-testid="bulk-confirm">
          {bulk.count} message(s) match. Run them through their route again and deliver them?{' '}
          <button type="button" onClick={bulkConfirm} disabled={bulk.count === 0}>
            Reprocess {bulk.count}
          </button>{' '}
          <button type="button" onClick={() => setBulk(null)}>
            Cancel
          </button>
        </div>
      )}
      {partial && <p class="warn">The text search stopped early (time limit): there may be more matches in this range.</p>}
      {unreachable.length > 0 && (
        <p class="warn">Not searched this time (the node did not answer): {unreachable.join(', ')}. Search again to include it.</p>
      )}
      {items && (
        <>
          <table class="grid messages">
            <thead>
              <tr>
                <th>Time</th>
                {items.some((m) => m.node) && <th>Node</th>}
                <th>Sender</th>
                <th>Type</th>
                <th>MSH-10</th>
                <th>Patient id</th>
                <th>Route</th>
                <th>Destination</th>
                <th>Status</th>
                <th>ACK</th>
                <th>Detections</th>
                <th>Latency ms</th>
              </tr>
            </thead>
            <tbody>
              {items.map((m) => (
                <tr key={m.id} class="click" data-testid="message-row" data-id={String(m.id)} onClick={() => go(`/messages/${encodeURIComponent(String(m.id))}`)}>
                  <td>
                    <a href={`#/messages/${encodeURIComponent(String(m.id))}`}>{fmtTime(m.time)}</a>
                  </td>
                  {items.some((x) => x.node) && <td>{m.node ?? ''}</td>}
                  <td>{m.sender}</td>
                  <td>{m.type}</td>
                  <td data-testid="message-control-id">{m.control_id}</td>
                  <td>{m.patient_id ?? ''}</td>
                  <td>{m.route ?? ''}</td>
                  <td>{m.destination ?? ''}</td>
                  <td>
                    {labelOf(m.status)}
                    {m.resolved ? ' (resolved)' : ''}
                  </td>
                  <td>{m.ack ?? ''}</td>
                  <td>{(m.detections ?? []).join(', ')}</td>
                  <td class="n">{m.latency_ms ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {items.length === 0 && <p class="muted">No messages match.</p>}
          {next !== null && next !== undefined && (
            <button type="button" disabled={busy} data-testid="search-older" onClick={() => run(next)}>
              Older
            </button>
          )}
        </>
      )}
    </main>
  );
}
