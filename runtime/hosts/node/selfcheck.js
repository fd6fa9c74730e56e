#!/usr/bin/env node
'use strict';
// Self-check: run a bundle's golden data (or other cases in the same JSON layout) through both graphs
// and compare with the outputs eager PyTorch gave. Prints the max differences; exits 1 on a mismatch.
//
//   node selfcheck.js BUNDLE_DIR [--cases cases.json] [--json]

const fs = require('fs');
const path = require('path');
const { BundleError, loadBundle } = require('./bundle');

function maxDiffs(expected, actual) {
  let maxAbs = 0;
  let maxRel = 0;
  let ok = expected.data.length === actual.data.length;
  for (let i = 0; ok && i < expected.data.length; i += 1) {
    const e = Number(expected.data[i]);
    const a = Number(actual.data[i]);
    const diff = Math.abs(a - e);
    maxAbs = Math.max(maxAbs, diff);
    maxRel = Math.max(maxRel, diff / Math.max(Math.abs(e), 1e-12));
    if (!(diff <= expected.atol + expected.rtol * Math.abs(e))) ok = false;
  }
  return { maxAbs, maxRel, ok };
}

async function runCase(bundle, graph, caseData, atol, rtol) {
  const inputs = caseData.inputs;
  let outputs;
  if (graph === 'model') {
    outputs = await bundle.predict(inputs.x.data, inputs.x.shape);
  } else {
    const prediction = { data: Float32Array.from(inputs.prediction.data), dims: inputs.prediction.shape };
    const { loss, perSampleLoss } = await bundle.loss(prediction, inputs.target.data);
    outputs = { loss: { data: [loss], dims: [] }, per_sample_loss: perSampleLoss };
  }
  return Object.entries(caseData.outputs).map(([name, expected]) => {
    const actual = outputs[name];
    const shapeOk = JSON.stringify(Array.from(actual.dims)) === JSON.stringify(expected.shape);
    const diffs = maxDiffs({ ...expected, atol, rtol }, actual);
    return { graph, output: name, shape: expected.shape, max_abs: diffs.maxAbs, max_rel: diffs.maxRel, ok: shapeOk && diffs.ok };
  });
}

async function main(argv) {
  const args = argv.slice(2);
  const dir = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--cases');
  if (!dir) {
    console.error('usage: node selfcheck.js BUNDLE_DIR [--cases cases.json] [--json]');
    return 2;
  }
  const casesFile = args.includes('--cases') ? args[args.indexOf('--cases') + 1] : path.join(dir, 'golden.json');
  let bundle;
  try {
    bundle = await loadBundle(dir);
  } catch (err) {
    console.error(`Error: ${err.message}`);
    return 2;
  }
  const cases = JSON.parse(fs.readFileSync(casesFile, 'utf8'));
  const list = Array.isArray(cases) ? cases : [cases];
  const rows = [];
  for (const c of list) {
    for (const graph of ['model', 'loss']) {
      if (c[graph]) rows.push(...(await runCase(bundle, graph, c[graph], c.atol, c.rtol)));
    }
  }
  if (args.includes('--json')) {
    console.log(JSON.stringify(rows));
  } else {
    for (const r of rows) {
      console.log(`${r.graph.padEnd(6)} ${r.output.padEnd(16)} [${r.shape}]`.padEnd(40)
        + ` max_abs ${r.max_abs.toExponential(2)} max_rel ${r.max_rel.toExponential(2)} ${r.ok ? 'ok' : 'MISMATCH'}`);
    }
  }
  const bad = rows.filter((r) => !r.ok).length;
  console.error(bad ? `${bad} output(s) differ beyond atol/rtol` : `all ${rows.length} outputs match`);
  return bad ? 1 : 0;
}

if (require.main === module) {
  main(process.argv).then((code) => { process.exitCode = code; }, (err) => {
    console.error(`Error: ${err instanceof BundleError ? err.message : err.stack}`);
    process.exitCode = 2;
  });
}
