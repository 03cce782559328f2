import { useEffect, useState } from 'preact/hooks';
import { api, errorMessage, isAdmin, query, type AuditEntry, type Me } from '../api';
import { ErrorBox, Note } from '../components';
import { fmtTime } from '../util';

const PAGE = 100;

export function Audit({ me }: { me: Me }) {
  const [items, setItems] = useState<AuditEntry[] | null>(null);
  const [more, setMore] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function load(before: AuditEntry['id'] | null) {
    setError(null);
    try {
      const page = await api<{ items: AuditEntry[] }>('GET', `/api/audit${query({ before, limit: PAGE })}`);
      setItems(before === null ? page.items : [...(items ?? []), ...page.items]);
      setMore(page.items.length === PAGE);
    } catch (e) {
      setError(errorMessage(e));
    }
  }

  useEffect(() => {
    load(null);
  }, []);

  return (
    <main>
      <h1>Audit</h1>
      {!isAdmin(me) && <Note>The audit log is for administrators.</Note>}
      <ErrorBox error={error} />
      {items && (
        <>
          <table class="grid" data-testid="audit">
            <thead>
              <tr>
                <th>Time</th>
                <th>User</th>
                <th>Action</th>
                <th>Target</th>
                <th>Result</th>
              </tr>
            </thead>
            <tbody>
              {items.map((a) => (
                <tr key={a.id}>
                  <td>{fmtTime(a.time)}</td>
                  <td>{a.user}</td>
                  <td>{a.action}</td>
                  <td>{a.target}</td>
                  <td>{a.result}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {items.length === 0 && <p class="muted">No entries.</p>}
          {more && (
            <button type="button" onClick={() => load(items[items.length - 1].id)}>
              Older
            </button>
          )}
        </>
      )}
    </main>
  );
}
