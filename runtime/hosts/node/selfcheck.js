#!/usr/bin/env node
'use strict';
// Self-check: run a bundle's golden data (or other cases in the same JSON layout) through both graphs
// and compare with the outputs eager PyTorch gave. Prints the max differences; exits 1 on a mismatch.
//
//   node selfcheck.js BUNDLE_DIR [--cases cases.json] [--precision fp32|int8|auto] [--public-key PUBLIC.pem] [--json]

const fs = require('fs');
const path = require('path');
const { BundleError, checkCases, loadBundle } = require('./bundle');

async function main(argv) {
  const args = argv.slice(2);
  const valueOf = (flag) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
  const dir = args.find((a, i) => !a.startsWith('--') && !['--cases', '--precision', '--public-key'].includes(args[i - 1]));
  if (!dir) {
    console.error('usage: node selfcheck.js BUNDLE_DIR [--cases cases.json] [--precision fp32|int8|auto] '
      + '[--public-key PUBLIC.pem] [--json]');
    return 2;
  }
  const casesFile = args.includes('--cases') ? args[args.indexOf('--cases') + 1] : path.join(dir, 'golden.json');
  let bundle;
  try {
    bundle = await loadBundle(dir, { precision: valueOf('--precision') || 'fp32', publicKey: valueOf('--public-key') });
  } catch (err) {
    console.error(`Error: ${err.message}`);
    return 2;
  }
  const cases = JSON.parse(fs.readFileSync(casesFile, 'utf8'));
  const list = Array.isArray(cases) ? cases : [cases];
  const rows = await checkCases(bundle, list);
  if (args.includes('--json')) {
    console.log(JSON.stringify(rows));
  } else {
    for (const r of rows) {
      console.log(`${r.graph.padEnd(6)} ${r.output.padEnd(16)} [${r.shape}]`.padEnd(40)
        + ` max_abs ${r.max_abs.toExponential(2)} max_rel ${r.max_rel.toExponential(2)} ${r.ok ? 'ok' : 'MISMATCH'}`);
    }
  }
  const bad = rows.filter((r) => !r.ok).length;
  const signed = bundle.signedBy ? `, signature verified (key ${bundle.signedBy.slice(0, 16)})` : '';
  console.error(bad ? `${bad} output(s) differ beyond atol/rtol` : `all ${rows.length} outputs match (${bundle.precision}${signed})`);
  return bad ? 1 : 0;
}

if (require.main === module) {
  main(process.argv).then((code) => { process.exitCode = code; }, (err) => {
    console.error(`Error: ${err instanceof BundleError ? err.message : err.stack}`);
    process.exitCode = 2;
  });
}
