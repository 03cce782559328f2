// stamp-hie, written in JavaScript: fills an empty MSH-22 (responsible sending
// organization) with the HIE's organization from the config key
// `organization` and records the original sending facility (MSH-4) in the
// attribute `original-sender`. Built into a WebAssembly component by build.mjs.

import { config } from 'izhub:plugin/host@0.1.0';

export function process(msg) {
  const text = msg.hl7;
  const end = text.indexOf('\r');
  const header = end < 0 ? text : text.slice(0, end);
  const rest = end < 0 ? '' : text.slice(end);
  if (!header.startsWith('MSH') || header.length < 4) {
    throw 'the message does not start with an MSH segment';
  }
  const sep = header[3];
  const fields = header.split(sep); // fields[k] is MSH-(k+1)
  const sender = fields.length > 3 ? fields[3] : '';
  const organization = config('organization') ?? '';
  let replaced = undefined;
  if (organization && (fields.length <= 21 || fields[21] === '')) {
    while (fields.length < 22) fields.push('');
    fields[21] = organization;
    replaced = fields.join(sep) + rest;
  }
  return {
    verdict: { tag: 'continue', val: replaced },
    issues: [],
    attributes: [['original-sender', sender]],
  };
}
