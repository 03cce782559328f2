// @NAME@: an izhub plugin in JavaScript. It rejects a message without a
// birth date (PID-7) and otherwise lets it go on unchanged.

export function process(msg) {
  const segments = msg.hl7.split('\r');
  const header = segments[0] ?? '';
  if (!header.startsWith('MSH') || header.length < 4) {
    throw 'the message does not start with an MSH segment';
  }
  const sep = header[3];
  const pid = segments.find((s) => s.startsWith('PID' + sep));
  const birthDate = pid ? pid.split(sep)[7] ?? '' : '';
  if (birthDate === '') {
    return {
      verdict: {
        tag: 'reject',
        val: [{
          severity: 'error',
          code: '101',
          appCode: '7',
          location: 'PID-7',
          text: "The patient's birth date (PID-7) is required.",
        }],
      },
      issues: [],
      attributes: [],
    };
  }
  return { verdict: { tag: 'continue', val: undefined }, issues: [], attributes: [] };
}
