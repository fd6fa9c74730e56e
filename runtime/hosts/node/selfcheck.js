#!/usr/bin/env node
'use strict';
// Self-check: run a bundle's golden data (or other cases in the same JSON layout) through both graphs
// and compare with the outputs eager PyTorch gave. Prints the max differences; exits 1 on a mismatch.
//
//   node selfcheck.js BUNDLE_DIR [--cases cases.json] [--precision fp32|int8|auto] [--public-key PUBLIC.pem] [--json]
//   node selfcheck.js BUNDLE_DIR BUNDLE_DIR ... [--json]   # several: one line (or JSON line) per bundle

const fs = require('fs');
const path = require('path');
const { BundleError, checkCases, loadBundle } = require('./bundle');

// One bundle's check: { code (0 all match, 1 mismatch, 2 refused), said (the summary line), rows }.
async function checkOne(dir, { casesFile, precision, publicKey }) {
  let bundle;
  try {
    bundle = await loadBundle(dir, { precision, publicKey });
  } catch (err) {
    return { code: 2, said: `Error: ${err instanceof BundleError ? err.message : err.stack}`, rows: [] };
  }
  const file = casesFile || path.join(dir, 'golden.json');
  let rows;
  try {
    const cases = JSON.parse(fs.readFileSync(file, 'utf8'));
    // a bundle's own golden.json holds both graphs; a --cases file may hold either, or a stream
    rows = await checkCases(bundle, Array.isArray(cases) ? cases : [cases], { required: casesFile ? [] : ['model', 'loss'] });
  } catch (err) {
    // a cases file that is not in the golden.json layout (a field missing or of the wrong type, or inputs the
    // graphs refuse): one line naming it, as the other kits say it
    const why = String(err.message).split('\n')[0].slice(0, 200);
    return { code: 2, said: `Error: ${file}: not in the golden.json layout (${why}); re-export the bundle`, rows: [] };
  }
  const bad = rows.filter((r) => !r.ok).length;
  const signed = bundle.signedBy ? `, signature verified (key ${bundle.signedBy.slice(0, 16)})` : '';
  return { code: bad ? 1 : 0, rows,
    said: bad ? `${bad} output(s) differ beyond atol/rtol` : `all ${rows.length} outputs match (${bundle.precision}${signed})` };
}

async function main(argv) {
  const args = argv.slice(2);
  const valueOf = (flag) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
  const dirs = args.filter((a, i) => !a.startsWith('--') && !['--cases', '--precision', '--public-key'].includes(args[i - 1]));
  if (!dirs.length) {
    console.error('usage: node selfcheck.js BUNDLE_DIR [BUNDLE_DIR ...] [--cases cases.json] [--precision fp32|int8|auto] '
      + '[--public-key PUBLIC.pem] [--json]');
    return 2;
  }
  const options = { casesFile: valueOf('--cases'), precision: valueOf('--precision') || 'fp32',
    publicKey: valueOf('--public-key') };
  if (dirs.length > 1) { // several bundles: one line each (JSON lines with --json), the worst exit status
    let worst = 0;
    for (const dir of dirs) {
      const { code, said } = await checkOne(dir, options);
      console.log(args.includes('--json') ? JSON.stringify({ bundle: dir, code, said }) : `${dir}: ${said}`);
      worst = Math.max(worst, code);
    }
    return worst;
  }
  const { code, said, rows } = await checkOne(dirs[0], options);
  if (args.includes('--json')) {
    if (code !== 2) console.log(JSON.stringify(rows));
  } else {
    for (const r of rows) {
      console.log(`${r.graph.padEnd(6)} ${r.output.padEnd(16)} [${r.shape}]`.padEnd(40)
        + ` max_abs ${r.max_abs.toExponential(2)} max_rel ${r.max_rel.toExponential(2)} ${r.ok ? 'ok' : 'MISMATCH'}`);
    }
  }
  console.error(said);
  return code;
}

if (require.main === module) {
  main(process.argv).then((code) => { process.exitCode = code; }, (err) => {
    console.error(`Error: ${err instanceof BundleError ? err.message : err.stack}`);
    process.exitCode = 2;
  });
}
