// Unit tests of the HL7 display helpers (src/hl7.ts), compiled on the fly with esbuild:
// node tests/hl7.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { build } from 'esbuild';
import { join } from 'node:path';
import { consoleDir } from './lib.mjs';

const out = await build({ entryPoints: [join(consoleDir, 'src/hl7.ts')], bundle: true, format: 'esm', write: false, platform: 'neutral' });
const { parseMessage, visibleText, diffMessages, segmentLines } = await import(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0].text).toString('base64')}`);

const MSG = 'MSH|^~\\&|APP|FAC|||20260101||VXU^V04|C1|P|2.5.1\rPID|1||ID1||Doe^Jane||20070706|F\rOBX|1|CE|A\rOBX|2|CE|B\r';

test('segments split on CR, LF or CRLF, framing bytes dropped', () => {
  assert.deepEqual(segmentLines('\x0bMSH|a\r\nPID|b\nPV1|c\rNTE|d\r\x1c\r'), ['MSH|a', 'PID|b', 'PV1|c', 'NTE|d']);
});

test('fields are numbered as HL7 numbers them; MSH-1 is the separator', () => {
  const [msh, pid, obx1, obx2] = parseMessage(MSG);
  assert.deepEqual(msh.fields.slice(0, 3), [{ n: 1, value: '|' }, { n: 2, value: '^~\\&' }, { n: 3, value: 'APP' }]);
  assert.equal(msh.fields.find((f) => f.n === 10).value, 'C1');
  assert.equal(pid.fields.find((f) => f.n === 7).value, '20070706');
  assert.equal(obx1.occurrence, 1);
  assert.equal(obx2.occurrence, 2);
});

test('control characters made visible', () => {
  assert.equal(visibleText('\x0bMSH|x\rPID|y\r\x1c\r', true), '<VT>MSH|x↵\nPID|y↵\n<FS>↵\n');
  assert.equal(visibleText('A\r\nB\x01', true), 'A↵\n␊\nB<0x01>');
  assert.equal(visibleText('\x0bMSH|x\rPID|y\r\x1c\r', false), 'MSH|x\nPID|y\n\n');
});

test('diff: a changed field, an added and a removed segment', () => {
  const after = MSG.replace('OBX|2|CE|B', 'OBX|2|CE|B2').replace('PID|1||ID1||Doe^Jane||20070706|F\r', 'PID|1||ID1||Doe^Jane||20070706|F\rPD1|||X\r').replace('OBX|1|CE|A\r', '');
  const d = diffMessages(MSG, after);
  assert.deepEqual(d.slice(0, 2).map((l) => l.kind), ['same', 'same']);
  const rest = d.slice(2);
  assert.deepEqual(rest.filter((l) => l.kind === 'add').map((l) => l.text), ['PD1|||X']);
  assert.deepEqual(rest.filter((l) => l.kind === 'del').map((l) => l.text), ['OBX|1|CE|A']);
  // The remaining OBX is paired with the one it is closest to: only OBX-3 changed.
  const mods = rest.filter((l) => l.kind === 'mod');
  assert.equal(mods.length, 1);
  assert.equal(mods[0].name, 'OBX');
  assert.deepEqual(mods[0].changes, [{ n: 3, before: 'B', after: 'B2' }]);
  assert.equal(d.at(-1).kind, 'mod', 'segment order is kept');
});

test('diff of identical texts is all unchanged, and line ends do not count', () => {
  const d = diffMessages(MSG, MSG.replace(/\r/g, '\n'));
  assert.ok(d.every((l) => l.kind === 'same'));
});

test('diff: two OBX changed in place are each paired with their own', () => {
  const d = diffMessages(MSG, MSG.replace('OBX|1|CE|A', 'OBX|1|CE|A1').replace('OBX|2|CE|B', 'OBX|2|CE|B1'));
  const mods = d.filter((l) => l.kind === 'mod');
  assert.deepEqual(mods.map((l) => l.changes), [[{ n: 3, before: 'A', after: 'A1' }], [{ n: 3, before: 'B', after: 'B1' }]]);
});

test('diff: a field added at the end of a segment', () => {
  const d = diffMessages('MSH|^~\\&|A\rRXA|0|1', 'MSH|^~\\&|A\rRXA|0|1||140^X^CVX');
  assert.equal(d[1].kind, 'mod');
  assert.deepEqual(d[1].changes, [{ n: 4, before: '', after: '140^X^CVX' }]);
});
