// Small HL7 v2 helpers for display: segments and fields, control characters made visible, and a
// segment-level diff with field-level detail for changed segments.

export interface Field {
  n: number; // the field's number: PID-7 has n = 7
  value: string;
}

export interface Segment {
  name: string;
  occurrence: number; // 1 for the first PID, 2 for a second OBX, ...
  text: string;
  fields: Field[];
}

const FRAMING = /[\x0b\x1c]/g;

/** The message's segments, as lines: CR, LF or CRLF end a segment; MLLP framing bytes are dropped. */
export function segmentLines(text: string): string[] {
  return text
    .replace(FRAMING, '')
    .split(/\r\n|\r|\n/)
    .filter((l) => l.length > 0);
}

function fieldSeparator(lines: string[]): string {
  const first = lines[0] ?? '';
  if (/^(MSH|FHS|BHS)/.test(first) && first.length > 3) return first[3];
  return '|';
}

function isHeader(name: string): boolean {
  return name === 'MSH' || name === 'FHS' || name === 'BHS';
}

/** Splits one segment into its numbered fields (MSH-1 is the field separator itself). */
export function splitFields(line: string, sep: string): Field[] {
  const name = line.slice(0, 3);
  const parts = line.split(sep);
  const fields: Field[] = [];
  if (isHeader(name)) {
    fields.push({ n: 1, value: sep });
    for (let i = 1; i < parts.length; i++) fields.push({ n: i + 1, value: parts[i] });
  } else {
    for (let i = 1; i < parts.length; i++) fields.push({ n: i, value: parts[i] });
  }
  return fields;
}

export function parseMessage(text: string): Segment[] {
  const lines = segmentLines(text);
  const sep = fieldSeparator(lines);
  const seen = new Map<string, number>();
  return lines.map((line) => {
    const name = line.slice(0, 3);
    const occurrence = (seen.get(name) ?? 0) + 1;
    seen.set(name, occurrence);
    return { name, occurrence, text: line, fields: splitFields(line, sep) };
  });
}

/**
 * The text for a <pre>. With `show`, CR becomes "↵" and a new line, LF "␊", the MLLP framing
 * bytes "<VT>" and "<FS>", and other control characters "<0xNN>"; without it, line ends become
 * new lines and the framing bytes are left out.
 */
export function visibleText(text: string, show: boolean): string {
  if (!show) return text.replace(FRAMING, '').replace(/\r\n|\r/g, '\n');
  let out = '';
  for (const ch of text) {
    switch (ch) {
      case '\r':
        out += '↵\n';
        break;
      case '\n':
        out += '␊\n';
        break;
      case '\x0b':
        out += '<VT>';
        break;
      case '\x1c':
        out += '<FS>';
        break;
      case '\t':
        out += '<TAB>';
        break;
      default: {
        const c = ch.charCodeAt(0);
        out += c < 0x20 || c === 0x7f ? `<0x${c.toString(16).padStart(2, '0').toUpperCase()}>` : ch;
      }
    }
  }
  return out;
}

export interface FieldChange {
  n: number;
  before: string;
  after: string;
}

export type DiffLine =
  | { kind: 'same'; text: string }
  | { kind: 'del'; text: string }
  | { kind: 'add'; text: string }
  | { kind: 'mod'; name: string; before: string; after: string; changes: FieldChange[] };

function lcsTable(a: string[], b: string[]): Uint32Array[] {
  const t: Uint32Array[] = [];
  for (let i = 0; i <= a.length; i++) t.push(new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      t[i][j] = a[i] === b[j] ? t[i + 1][j + 1] + 1 : Math.max(t[i + 1][j], t[i][j + 1]);
    }
  }
  return t;
}

function fieldChanges(before: string, after: string, sep: string): FieldChange[] {
  const a = splitFields(before, sep);
  const b = splitFields(after, sep);
  const changes: FieldChange[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i]?.value ?? '';
    const y = b[i]?.value ?? '';
    if (x !== y) changes.push({ n: (a[i] ?? b[i]).n, before: x, after: y });
  }
  return changes;
}

/**
 * A segment-level diff of two versions of a message. A removed segment followed by an added one
 * with the same name is shown as one modified segment with the fields that changed.
 */
export function diffMessages(before: string, after: string): DiffLine[] {
  const a = segmentLines(before);
  const b = segmentLines(after);
  const sep = fieldSeparator(b.length ? b : a);
  const t = lcsTable(a, b);
  const raw: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      raw.push({ kind: 'same', text: a[i] });
      i++;
      j++;
    } else if (t[i + 1][j] >= t[i][j + 1]) {
      raw.push({ kind: 'del', text: a[i++] });
    } else {
      raw.push({ kind: 'add', text: b[j++] });
    }
  }
  while (i < a.length) raw.push({ kind: 'del', text: a[i++] });
  while (j < b.length) raw.push({ kind: 'add', text: b[j++] });

  // Within each run of deletions and additions, pair removed and added segments of the same name
  // so that the fewest fields differ (an alignment by dynamic programming; runs are short).
  const out: DiffLine[] = [];
  let k = 0;
  while (k < raw.length) {
    if (raw[k].kind === 'same') {
      out.push(raw[k++]);
      continue;
    }
    const dels: string[] = [];
    const adds: string[] = [];
    while (k < raw.length && raw[k].kind !== 'same') {
      const l = raw[k++] as { kind: 'del' | 'add'; text: string };
      (l.kind === 'del' ? dels : adds).push(l.text);
    }
    out.push(...alignRun(dels, adds, sep));
  }
  return out;
}

function weight(line: string, sep: string): number {
  return Math.max(1, splitFields(line, sep).filter((f) => f.value !== '').length);
}

function alignRun(dels: string[], adds: string[], sep: string): DiffLine[] {
  const n = dels.length;
  const m = adds.length;
  const changes: (FieldChange[] | null)[][] = dels.map((d) => adds.map((a) => (d.slice(0, 3) === a.slice(0, 3) ? fieldChanges(d, a, sep) : null)));
  const cost: number[][] = [];
  for (let i = 0; i <= n; i++) cost.push(new Array<number>(m + 1).fill(0));
  for (let i = n; i >= 0; i--) {
    for (let j = m; j >= 0; j--) {
      if (i === n && j === m) continue;
      let best = Infinity;
      if (i < n) best = Math.min(best, cost[i + 1][j] + weight(dels[i], sep));
      if (j < m) best = Math.min(best, cost[i][j + 1] + weight(adds[j], sep));
      const c = i < n && j < m ? changes[i][j] : null;
      if (c) best = Math.min(best, cost[i + 1][j + 1] + c.length);
      cost[i][j] = best;
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    const c = i < n && j < m ? changes[i][j] : null;
    if (c && cost[i][j] === cost[i + 1][j + 1] + c.length) {
      out.push({ kind: 'mod', name: dels[i].slice(0, 3), before: dels[i], after: adds[j], changes: c });
      i++;
      j++;
    } else if (i < n && cost[i][j] === cost[i + 1][j] + weight(dels[i], sep)) {
      out.push({ kind: 'del', text: dels[i++] });
    } else {
      out.push({ kind: 'add', text: adds[j++] });
    }
  }
  return out;
}
