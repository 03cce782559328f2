import { useEffect, useState } from 'preact/hooks';
import { api, canAct, errorMessage, type Issue, type Me, type MessageDetail } from '../api';
import { ActionButton, ErrorBox } from '../components';
import { fieldLabel, loadFields, segmentName, type FieldDictionary } from '../fields';
import { diffMessages, parseMessage, visibleText, type DiffLine } from '../hl7';
import { fmtTime, labelOf } from '../util';

function IssuesTable({ issues, testid }: { issues: Issue[]; testid?: string }) {
  if (!issues || issues.length === 0) return <p class="muted">None.</p>;
  return (
    <table class="grid" data-testid={testid}>
      <thead>
        <tr>
          <th>Severity</th>
          <th>Code</th>
          <th>Location</th>
          <th>Text</th>
        </tr>
      </thead>
      <tbody>
        {issues.map((i, k) => (
          <tr key={k} class={`sev-${i.severity}`}>
            <td>{i.severity}</td>
            <td>{i.code}</td>
            <td>{i.location}</td>
            <td>{i.text}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Tree({ text, dict }: { text: string; dict: FieldDictionary }) {
  const [empty, setEmpty] = useState(false);
  const segments = parseMessage(text);
  return (
    <div class="tree" data-testid="tree">
      <label class="toggle">
        <input type="checkbox" checked={empty} onChange={() => setEmpty(!empty)} /> show empty fields
      </label>
      {segments.map((s, i) => (
        <details key={i} open data-testid={`segment-${s.name}`}>
          <summary>
            <b>{s.name}</b>
            {s.occurrence > 1 || segments.filter((x) => x.name === s.name).length > 1 ? `[${s.occurrence}]` : ''}{' '}
            <span class="muted">{segmentName(dict, s.name)}</span>
          </summary>
          <ul>
            {s.fields
              .filter((f) => empty || f.value !== '')
              .map((f) => (
                <li key={f.n} data-testid={`field-${s.name}-${f.n}`}>
                  <span class="fl">{fieldLabel(dict, s.name, f.n)}</span>
                  <span class="fv" data-testid="field-value">
                    {f.value}
                  </span>
                </li>
              ))}
          </ul>
        </details>
      ))}
    </div>
  );
}

function Diff({ lines, dict }: { lines: DiffLine[]; dict: FieldDictionary }) {
  return (
    <div class="diff" data-testid="diff">
      {lines.map((l, i) => {
        if (l.kind === 'same') {
          return (
            <div key={i} class="d-same">
              {'  '}
              {l.text}
            </div>
          );
        }
        if (l.kind === 'del') {
          return (
            <div key={i} class="d-del">
              {'- '}
              {l.text}
            </div>
          );
        }
        if (l.kind === 'add') {
          return (
            <div key={i} class="d-add">
              {'+ '}
              {l.text}
            </div>
          );
        }
        return (
          <div key={i} class="d-mod">
            <div class="d-del">
              {'- '}
              {l.before}
            </div>
            <div class="d-add">
              {'+ '}
              {l.after}
            </div>
            <ul class="d-fields">
              {l.changes.map((c) => (
                <li key={c.n}>
                  <span class="fl">{fieldLabel(dict, l.name, c.n)}</span>: <del>{c.before || '(empty)'}</del> → <ins>{c.after || '(empty)'}</ins>
                </li>
              ))}
            </ul>
          </div>
        );
      })}
    </div>
  );
}

function Stages({ detail, dict }: { detail: MessageDetail; dict: FieldDictionary }) {
  if (!detail.stages || detail.stages.length === 0) return <p class="muted">No plugin ran.</p>;
  let previous = detail.received;
  return (
    <ol class="stages">
      {detail.stages.map((s, i) => {
        const before = previous;
        if (s.text) previous = s.text;
        return (
          <li key={i} data-testid="stage">
            <h3>
              {s.plugin} <span class={`verdict v-${s.verdict}`}>{s.verdict}</span>{' '}
              {s.changed ? <span class="badge">changed the message</span> : <span class="muted">no change</span>}
            </h3>
            {typeof s.issues === 'number'
              ? s.issues > 0 && <p class="muted">{s.issues === 1 ? '1 issue reported' : `${s.issues} issues reported`} (listed under Issues)</p>
              : s.issues && s.issues.length > 0 && <IssuesTable issues={s.issues} />}
            {s.changed && (s.text ? <Diff lines={diffMessages(before, s.text)} dict={dict} /> : <p class="muted">The changed text was not kept.</p>)}
          </li>
        );
      })}
    </ol>
  );
}

export function Detail({ id, me }: { id: string; me: Me }) {
  const [detail, setDetail] = useState<MessageDetail | null>(null);
  const [dict, setDict] = useState<FieldDictionary>({});
  const [unmask, setUnmask] = useState(false);
  const [showControl, setShowControl] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const operator = canAct(me);

  async function load(unmasked: boolean) {
    try {
      const d = await api<MessageDetail>('GET', `/api/messages/${encodeURIComponent(id)}${unmasked ? '?unmask=true' : ''}`);
      setDetail(d);
      setUnmask(unmasked);
    } catch (e) {
      setError(errorMessage(e));
    }
  }

  useEffect(() => {
    setDetail(null);
    setError(null);
    setDone(null);
    load(false);
    loadFields().then(setDict);
  }, [id]);

  async function action(name: string, path: string, body: unknown = {}) {
    setDone(null);
    const r = await api<Record<string, unknown>>('POST', path, body);
    const extra = Object.entries(r)
      .filter(([k]) => k !== 'ok')
      .map(([k, v]) => `${labelOf(k)}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
      .join(', ');
    setDone(`${name}: ${r.ok === false ? 'failed' : 'ok'}${extra ? ` (${extra})` : ''}`);
    await load(unmask);
  }

  const base = `/api/messages/${encodeURIComponent(id)}`;
  const m = detail?.meta;
  return (
    <main>
      <p>
        <a href="#/messages">← Messages</a>
      </p>
      <h1>Message {m ? m.control_id : id}</h1>
      {operator && (
        <div class="toolbar" data-testid="actions">
          <ActionButton label={unmask ? 'Mask' : 'Unmask'} testid="unmask" title="Unmasking is audited" onError={setError} run={() => load(!unmask)} />
          <ActionButton label="Reprocess" testid="reprocess" onError={setError} run={() => action('Reprocess', `${base}/reprocess`)} />
          {detail?.journaled && (
            <>
              <ActionButton label="Retry now" testid="retry" onError={setError} run={() => action('Retry now', `${base}/retry`)} />
              <ActionButton label="Resend" testid="resend" onError={setError} run={() => action('Resend', `${base}/resend`)} />
            </>
          )}
          {m && m.status === 'errored' && !m.resolved && (
            <ActionButton label="Mark resolved" testid="resolve" onError={setError} run={() => action('Resolve', '/api/errors/resolve', { ids: [m.id] })} />
          )}
        </div>
      )}
      <ErrorBox error={error} />
      {done && (
        <p class="ok" data-testid="done">
          {done}
        </p>
      )}
      {detail && m && (
        <>
          {(detail.reprocess_of || (detail.reprocessed_as ?? []).length > 0) && (
            <p data-testid="reprocess-links">
              {detail.reprocess_of && (
                <>
                  Reprocessed from <a href={`#/messages/${detail.reprocess_of}`}>message {detail.reprocess_of}</a>.{' '}
                </>
              )}
              {(detail.reprocessed_as ?? []).length > 0 && (
                <>
                  Reprocessed as{' '}
                  {(detail.reprocessed_as ?? []).map((r, i) => (
                    <>
                      {i > 0 && ', '}
                      <a key={r} href={`#/messages/${r}`}>
                        message {r}
                      </a>
                    </>
                  ))}
                  .
                </>
              )}
            </p>
          )}
          <p data-testid="masked" class={detail.masked ? 'muted' : 'warn'}>
            {detail.masked ? 'Patient data is masked.' : 'Patient data is shown unmasked (this view was audited).'}
          </p>
          <section>
            <h2>Metadata</h2>
            <dl class="kv" data-testid="meta">
              {(
                [
                  ['Id', m.id],
                  ['Time', fmtTime(m.time)],
                  ['Listener', m.listener],
                  ['Sender', m.sender],
                  ['Type', m.type],
                  ['MSH-10', m.control_id],
                  ['Patient id', m.patient_id],
                  ['Route', m.route],
                  ['Destination', m.destination],
                  ['Status', labelOf(m.status ?? '') + (m.resolved ? ' (resolved)' : '')],
                  ['ACK', m.ack],
                  ['Detections', (m.detections ?? []).join(', ')],
                  ['Latency ms', m.latency_ms],
                ] as [string, unknown][]
              ).map(([k, v]) => (
                <div key={k}>
                  <dt>{k}</dt>
                  <dd>{v === null || v === undefined ? '' : String(v)}</dd>
                </div>
              ))}
            </dl>
          </section>
          <section>
            <h2>As received</h2>
            <label class="toggle">
              <input type="checkbox" data-testid="show-control" checked={showControl} onChange={() => setShowControl(!showControl)} /> show CR and framing
              bytes
            </label>
            <pre class="raw" data-testid="raw">
              {visibleText(detail.received ?? '', showControl)}
            </pre>
          </section>
          <section>
            <h2>Segments and fields</h2>
            <Tree text={detail.received ?? ''} dict={dict} />
          </section>
          <section>
            <h2>Plugins</h2>
            <Stages detail={detail} dict={dict} />
          </section>
          <section>
            <h2>Issues</h2>
            <IssuesTable issues={detail.issues} testid="issues" />
          </section>
          <section>
            <h2>Answer sent back</h2>
            {detail.answer ? (
              <>
                {detail.answer_decoded?.msa && (
                  <dl class="kv" data-testid="msa">
                    <div>
                      <dt>MSA-1 Acknowledgment Code</dt>
                      <dd>{detail.answer_decoded.msa.code}</dd>
                    </div>
                    <div>
                      <dt>MSA-2 Message Control ID</dt>
                      <dd>{detail.answer_decoded.msa.control_id}</dd>
                    </div>
                    <div>
                      <dt>MSA-3 Text Message</dt>
                      <dd>{detail.answer_decoded.msa.text}</dd>
                    </div>
                  </dl>
                )}
                {detail.answer_decoded && detail.answer_decoded.err.length > 0 && (
                  <table class="grid" data-testid="err">
                    <thead>
                      <tr>
                        <th>ERR-2 Location</th>
                        <th>ERR-3 Code</th>
                        <th>ERR-4 Severity</th>
                        <th>Text</th>
                      </tr>
                    </thead>
                    <tbody>
                      {detail.answer_decoded.err.map((e, k) => (
                        <tr key={k}>
                          <td>{e.location}</td>
                          <td>{e.code}</td>
                          <td>{e.severity}</td>
                          <td>{e.text}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                )}
                <pre class="raw" data-testid="answer">
                  {visibleText(detail.answer, showControl)}
                </pre>
              </>
            ) : (
              <p class="muted">No answer recorded.</p>
            )}
          </section>
          <section>
            <h2>Delivery attempts</h2>
            {detail.attempts && detail.attempts.length > 0 ? (
              <table class="grid" data-testid="attempts">
                <thead>
                  <tr>
                    <th>Time</th>
                    <th>Destination</th>
                    <th>Result</th>
                    <th>Class</th>
                    <th>IIS answer</th>
                  </tr>
                </thead>
                <tbody>
                  {detail.attempts.map((a, k) => (
                    <tr key={k} data-testid="attempt">
                      <td>{fmtTime(a.time)}</td>
                      <td>{a.destination}</td>
                      <td>{a.result}</td>
                      <td>{a.class ?? ''}</td>
                      <td>
                        {a.answer ? (
                          <details>
                            <summary>show</summary>
                            <pre class="raw">{visibleText(a.answer, showControl)}</pre>
                          </details>
                        ) : (
                          ''
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <p class="muted">None.</p>
            )}
          </section>
        </>
      )}
    </main>
  );
}
