const pad = (n: number) => String(n).padStart(2, '0');

/** Local date and time, "2026-05-01 14:03:07"; the input unchanged when it is not a date. */
export function fmtTime(t: string | number | null | undefined): string {
  if (t === null || t === undefined || t === '') return '';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
export function fmtAge(secs: number | null | undefined): string {
  if (secs === null || secs === undefined) return '';
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function fmtNum(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || Number.isNaN(n)) return '';
  return digits ? n.toFixed(digits) : String(n);
}

/** A value from <input type="datetime-local"> as RFC 3339 (UTC); '' stays ''. */
export function localInputToRfc3339(v: string): string {
  if (!v) return '';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

export function labelOf(key: string): string {
  return key.replace(/_/g, ' ');
}

/** Sets the page URL's hash route; ids only, never search values (no PHI in URLs). */
export function go(path: string): void {
  location.hash = `#${path}`;
}
