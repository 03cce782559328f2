import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { errorMessage } from './api';
import { labelOf } from './util';

/** A server or client error, visible to the user and to tests (data-testid="error"). */
export function ErrorBox({ error }: { error: string | null }) {
  if (!error) return null;
  return (
    <p class="error" role="alert" data-testid="error">
      {error}
    </p>
  );
}

export function Note({ children }: { children: ComponentChildren }) {
  return <p class="note">{children}</p>;
}

/** A button that runs an async action, is disabled while it runs, and reports failures. */
export function ActionButton(props: {
  label: string;
  run: () => Promise<unknown>;
  onError: (msg: string | null) => void;
  testid?: string;
  title?: string;
  confirm?: string;
}) {
  const [busy, setBusy] = useState(false);
  return (
    <button
      type="button"
      disabled={busy}
      title={props.title}
      data-testid={props.testid}
      onClick={async () => {
        if (props.confirm && !window.confirm(props.confirm)) return;
        setBusy(true);
        props.onError(null);
        try {
          await props.run();
        } catch (e) {
          props.onError(errorMessage(e));
        } finally {
          setBusy(false);
        }
      }}
    >
      {busy ? `${props.label}…` : props.label}
    </button>
  );
}

function isScalar(v: unknown): v is string | number | boolean | null | undefined {
  return v === null || v === undefined || ['string', 'number', 'boolean'].includes(typeof v);
}

function scalarText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  return String(v);
}

/**
 * Any JSON value, shown plainly: objects as definition lists, arrays of objects as tables, other
 * arrays as lists. Used where the API's shape is open (data quality).
 */
export function JsonView({ value, depth = 0 }: { value: unknown; depth?: number }) {
  if (isScalar(value)) return <span>{scalarText(value)}</span>;
  if (depth > 6) return <code>{JSON.stringify(value)}</code>;
  if (Array.isArray(value)) {
    if (value.length === 0) return <span class="muted">none</span>;
    if (value.every((x) => x && typeof x === 'object' && !Array.isArray(x))) {
      const keys: string[] = [];
      for (const row of value as Record<string, unknown>[]) {
        for (const k of Object.keys(row)) if (!keys.includes(k)) keys.push(k);
      }
      return (
        <table class="grid">
          <thead>
            <tr>
              {keys.map((k) => (
                <th key={k}>{labelOf(k)}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {(value as Record<string, unknown>[]).map((row, i) => (
              <tr key={i}>
                {keys.map((k) => (
                  <td key={k}>
                    <JsonView value={row[k]} depth={depth + 1} />
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      );
    }
    if (value.every(isScalar)) return <span>{value.map(scalarText).join(', ')}</span>;
    return (
      <ul>
        {value.map((x, i) => (
          <li key={i}>
            <JsonView value={x} depth={depth + 1} />
          </li>
        ))}
      </ul>
    );
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return <span class="muted">none</span>;
  return (
    <dl class="kv">
      {entries.map(([k, v]) => (
        <div key={k}>
          <dt>{labelOf(k)}</dt>
          <dd>
            <JsonView value={v} depth={depth + 1} />
          </dd>
        </div>
      ))}
    </dl>
  );
}

/** One bar of a chart: all messages, the rejected part, and what hovering it says. */
export interface Bar {
  key: string;
  all: number;
  bad: number;
  title: string;
}

/**
 * Messages as bars, the rejected part drawn in red over each, so a trend shows at a glance; each
 * bar's title gives its numbers. Drawn as SVG by the console itself.
 */
export function Bars({ bars, testid, label, width = 14, height = 60 }: { bars: Bar[]; testid: string; label: string; width?: number; height?: number }) {
  if (bars.length === 0) return null;
  const max = Math.max(1, ...bars.map((b) => b.all));
  const w = width;
  const h = height;
  return (
    <svg class="trend" data-testid={testid} width={bars.length * w} height={h + 2} viewBox={`0 0 ${bars.length * w} ${h + 2}`} role="img" aria-label={label}>
      <line x1={0} y1={h + 1.5} x2={bars.length * w} y2={h + 1.5} class="base" />
      {bars.map((b, i) => {
        const all = b.all > 0 ? Math.max(1, Math.round((h * b.all) / max)) : 0;
        const bad = b.bad > 0 ? Math.max(1, Math.round((h * b.bad) / max)) : 0;
        return (
          <g key={b.key}>
            <title>{b.title}</title>
            <rect x={i * w} y={0} width={w} height={h + 2} class="bar-slot" />
            {all > 0 && <rect x={i * w + (w > 3 ? 1 : 0)} y={h - all + 1} width={Math.max(1, w - 2)} height={all} class="bar-all" />}
            {bad > 0 && <rect x={i * w + (w > 3 ? 1 : 0)} y={h - bad + 1} width={Math.max(1, w - 2)} height={bad} class="bar-bad" />}
          </g>
        );
      })}
    </svg>
  );
}
