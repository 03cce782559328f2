// Reduces the npm package hl7-dictionary (MIT) to the segments izhub sees:
// dist/hl7-fields.json = {"PID":{"name":"Patient Identification","fields":["Set ID - PID",...]}}
// (index i is field i+1), and writes the licence notices (hl7-dictionary, Preact) to dist/NOTICE.
import { createRequire } from 'node:module';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export const SEGMENTS = ['MSH', 'SFT', 'PID', 'PD1', 'NK1', 'PV1', 'ORC', 'RXA', 'RXR', 'OBX', 'NTE', 'QPD', 'RCP', 'QAK', 'MSA', 'ERR', 'IN1'];
const WANTED_VERSION = '2.5.1';

function versionKey(v) {
  return v.split('.').map((n) => Number(n));
}

/** The wanted version, or the closest one the package has (the highest below it, else the lowest above). */
function pickVersion(versions) {
  if (versions.includes(WANTED_VERSION)) return WANTED_VERSION;
  const cmp = (a, b) => {
    const x = versionKey(a), y = versionKey(b);
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      const d = (x[i] ?? 0) - (y[i] ?? 0);
      if (d) return d;
    }
    return 0;
  };
  const sorted = [...versions].sort(cmp);
  const below = sorted.filter((v) => cmp(v, WANTED_VERSION) < 0);
  return below.length ? below[below.length - 1] : sorted[0];
}

function packageInfo(name) {
  const pkgPath = require.resolve(`${name}/package.json`);
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
  const dir = dirname(pkgPath);
  const licenceFile = ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license'].map((f) => join(dir, f)).find((f) => existsSync(f));
  return { pkg, dir, licence: licenceFile ? readFileSync(licenceFile, 'utf8').trim() : null };
}

const MIT = (holder) => `MIT License

Copyright (c) ${holder}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.`;

export function buildFields(outDir = join(root, 'dist')) {
  const dictionary = require('hl7-dictionary');
  const versions = Object.keys(dictionary.definitions);
  const version = pickVersion(versions);
  const segments = dictionary.definitions[version].segments;
  const out = {};
  const missing = [];
  for (const seg of SEGMENTS) {
    const def = segments[seg];
    if (!def) {
      missing.push(seg);
      continue;
    }
    out[seg] = { name: def.desc, fields: def.fields.map((f) => f.desc ?? '') };
  }
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'hl7-fields.json'), JSON.stringify(out));

  const hl7 = packageInfo('hl7-dictionary');
  const preact = packageInfo('preact');
  // hl7-dictionary 1.0.1 declares "license": "MIT" in package.json and its README says
  // "Copyright 2015 Fernando Serrano", but ships no licence file: the MIT text is written out here.
  const hl7Licence =
    hl7.licence ?? `${MIT('2015 Fernando Serrano <fernandojsg@gmail.com>')}\n\n(hl7-dictionary ${hl7.pkg.version} declares "license": "${hl7.pkg.license}" and this copyright in its README; it ships no licence file, so the standard MIT text is reproduced here.)`;
  const versionNote =
    version === WANTED_VERSION
      ? `The field names are those of HL7 v2 version ${version} in that package.`
      : `The package has no HL7 v2 version ${WANTED_VERSION}; the field names are those of version ${version}, the closest it has.`;
  const notice = `izhub console — third-party notices
======================================

app.js includes Preact ${preact.pkg.version} (${preact.pkg.license}).
hl7-fields.json is derived from hl7-dictionary ${hl7.pkg.version} (${hl7.pkg.license}), segments ${SEGMENTS.join(', ')}.
${versionNote}${missing.length ? `\nSegments not in the package: ${missing.join(', ')}.` : ''}

-------------------------------------------------------------------------------
hl7-dictionary ${hl7.pkg.version} — ${hl7.pkg.homepage ?? ''}
-------------------------------------------------------------------------------
${hl7Licence}

-------------------------------------------------------------------------------
Preact ${preact.pkg.version} — https://preactjs.com
-------------------------------------------------------------------------------
${preact.licence ?? MIT('2015-present Jason Miller')}
`;
  writeFileSync(join(outDir, 'NOTICE'), notice);
  return { version, segments: Object.keys(out).length, missing };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = buildFields();
  console.log(`hl7-fields.json: ${r.segments} segments from HL7 v2 ${r.version}${r.missing.length ? `; missing ${r.missing.join(', ')}` : ''}`);
}
