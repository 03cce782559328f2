// Field names for the segments izhub sees, from hl7-fields.json (built from hl7-dictionary).

export type FieldDictionary = Record<string, { name: string; fields: string[] }>;

let cache: Promise<FieldDictionary> | null = null;

export function loadFields(): Promise<FieldDictionary> {
  if (!cache) {
    // Relative to the page: /console/hl7-fields.json.
    cache = fetch('hl7-fields.json', { credentials: 'same-origin' })
      .then((r) => (r.ok ? (r.json() as Promise<FieldDictionary>) : {}))
      .catch(() => ({}));
  }
  return cache;
}

export function segmentName(dict: FieldDictionary, seg: string): string {
  return dict[seg]?.name ?? '';
}

/** "PID-7 Date/Time of Birth"; "ZXY-3" for a segment or field the dictionary does not name. */
export function fieldLabel(dict: FieldDictionary, seg: string, n: number): string {
  const name = dict[seg]?.fields[n - 1];
  return name ? `${seg}-${n} ${name}` : `${seg}-${n}`;
}
