// npm run build: dist/index.html, app.js (bundled, minified), app.css, hl7-fields.json, NOTICE.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFields } from './fields.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

await build({
  entryPoints: [join(root, 'src/main.tsx')],
  outfile: join(dist, 'app.js'),
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none', // the notices are in dist/NOTICE
  sourcemap: false,
  logLevel: 'warning',
});
copyFileSync(join(root, 'src/index.html'), join(dist, 'index.html'));
copyFileSync(join(root, 'src/app.css'), join(dist, 'app.css'));
const fields = buildFields(dist);

for (const f of ['index.html', 'app.js', 'app.css', 'hl7-fields.json', 'NOTICE']) {
  console.log(`dist/${f}  ${statSync(join(dist, f)).size} bytes`);
}
console.log(`field names from HL7 v2 ${fields.version}`);
