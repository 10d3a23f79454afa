// build-umd.mjs -- writes holdfast.umd.js, the classic-script build of
// holdfast.js: the same code with its `export` keywords removed, wrapped so
// that a <script> gets a global `holdfast` and CommonJS gets module.exports.
//   node build-umd.mjs           write holdfast.umd.js
//   node build-umd.mjs --check   exit 1 if holdfast.umd.js is out of date
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'holdfast.js');
const out = join(here, 'holdfast.umd.js');

/** The UMD text for the module source. */
function makeUmd(source) {
  const names = [...source.matchAll(/^export (?:async )?(?:function|class|const) (\w+)/gm)]
    .map((m) => m[1]);
  const body = source.replace(/^export (?=(?:async )?(?:function|class|const) )/gm, '')
    .replace(/^(?=.)/gm, '  ');
  return `// holdfast.umd.js -- GENERATED from holdfast.js by build-umd.mjs; do not edit.
// A classic script: <script src="holdfast.umd.js"></script> defines the
// global \`holdfast\` (holdfast.subscribe, holdfast.publish, ...).
(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.holdfast = factory();
}(typeof globalThis !== 'undefined' ? globalThis : this, function () {
  'use strict';
${body}
  return { ${names.join(', ')} };
}));
`;
}

const wanted = makeUmd(readFileSync(src, 'utf8'));
if (process.argv.includes('--check')) {
  let have = '';
  try { have = readFileSync(out, 'utf8'); } catch (_) { /* missing: out of date */ }
  if (have !== wanted) {
    console.error('holdfast.umd.js is out of date: run `node build-umd.mjs` in www/');
    process.exit(1);
  }
} else {
  writeFileSync(out, wanted);
}
