// Builds plugin.js into a WebAssembly component for the izhub:plugin world.
// Usage: node build.mjs OUTPUT.wasm (`izhub plugin build` runs it, then
// writes the manifest from izhub-plugin.toml into the component).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'plugin.wasm');
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: join(here, 'wit'),
  worldName: 'plugin',
  // A pure component: no WASI beyond what the world itself needs.
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
