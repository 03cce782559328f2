import { useEffect, useState } from 'preact/hooks';
import { api, errorMessage, type Codeset } from '../api';
import { ErrorBox } from '../components';

export function Codesets() {
  const [sets, setSets] = useState<Codeset[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api<Codeset[]>('GET', '/api/codesets')
      .then(setSets)
      .catch((e) => setError(errorMessage(e)));
  }, []);

  const stale = sets?.filter((s) => s.stale).length ?? 0;
  return (
    <main>
      <h1>Code sets</h1>
      <p class="muted">A CVX or NDC set is stale when it is older than the configured limit ([console] codeset_max_age_days, 90 days by default).</p>
      <ErrorBox error={error} />
      {stale > 0 && (
        <p class="warn" data-testid="stale-count">
          {stale} code set(s) are stale: install newer CDC files with <code>izhub codes update</code>.
        </p>
      )}
      {sets && (
        <table class="grid" data-testid="codesets">
          <thead>
            <tr>
              <th>Name</th>
              <th>Source</th>
              <th>Date</th>
              <th>Codes</th>
              <th>Age (days)</th>
              <th>State</th>
            </tr>
          </thead>
          <tbody>
            {sets.map((s) => (
              <tr key={s.name} class={s.stale ? 'stale' : ''} data-testid={`codeset-${s.name}`}>
                <td>{s.name}</td>
                <td>{s.source}</td>
                <td class="date">{s.date || <span class="muted">not stated</span>}</td>
                <td class="n">{s.count}</td>
                <td class="n">{s.age_days ?? ''}</td>
                <td>{s.stale ? <span class="badge bad">stale</span> : 'current'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </main>
  );
}
