#!/usr/bin/env node
'use strict';
// Stream a recording through a windowed bundle, as a live service would: the per-sample .csv is read line by
// line (a row per time step) and pushed to bundle.stream() every --chunk rows; each window is printed as soon as
// it completes: recording, start, end, then the label (class tasks) and the scores. A new recording id (the
// manifest's recording column) starts a new stream. Memory stays flat however long the recording. A per-step
// bundle (--window-label each) prints each sample once every window covering it has arrived, stitched:
// recording, sample, the label(s) and the probabilities, the columns `pipeline predict` writes.
//
//   node stream.js BUNDLE_DIR RECORDING.csv [--chunk 32] [--precision fp32|int8|auto] [--public-key PUBLIC.pem]

const fs = require('fs');
const readline = require('readline');
const { BundleError, loadBundle, signalColumns } = require('./bundle');

async function main(argv) {
  const args = argv.slice(2);
  const valueOf = (flag) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
  const [dir, file] = args.filter((a, i) => !a.startsWith('--') && !['--chunk', '--precision', '--public-key'].includes(args[i - 1]));
  if (!dir || !file) {
    console.error('usage: node stream.js BUNDLE_DIR RECORDING.csv [--chunk N] [--precision fp32|int8|auto] [--public-key PUBLIC.pem]');
    return 2;
  }
  const chunkRows = Number(valueOf('--chunk') || 32);
  const bundle = await loadBundle(dir, { precision: valueOf('--precision') || 'fp32', publicKey: valueOf('--public-key') });
  const w = bundle.manifest.window || {};
  const C = bundle.manifest.input.channels;
  const scores = bundle.outputs[bundle.outputs.length > 1 ? 1 : 0];
  const names = bundle.classes;
  const hasLabel = bundle.outputs.includes('label');
  let header = null; let keep = null; let idColumn = -1;
  let stream = null; let id = null; let rows = []; let lineNo = 0;
  const out = process.stdout;
  // a reader that has seen enough (`| head`) closes the pipe: stop quietly, as command-line tools do
  out.on('error', (err) => { if (err.code === 'EPIPE') process.exit(0); else throw err; });

  const steps = bundle.steps;
  const K = bundle.manifest.model.n_outputs;
  const writeSamples = (got) => {  // a per-step stream's answers, one row per sample
    const [m, k] = got.probabilities.dims;
    for (let i = 0; i < m; i += 1) {
      const p = Array.from(got.probabilities.data.slice(i * k, (i + 1) * k), (v) => Number(v).toPrecision(9));
      let labels;
      if (bundle.task === 'multiclass') labels = [names[got.label.data[i]]];
      else if (bundle.task === 'binary') labels = [names[got.label.data[i]]];
      else labels = Array.from(got.label.data.slice(i * k, (i + 1) * k), String);
      out.write(`${id},${got.sample[i]},${[...labels, ...p].join(',')}\n`);
    }
  };

  const flush = async () => {
    if (!rows.length) return;
    const n = rows.length;
    const chunk = new Float32Array(C * n);
    rows.forEach((r, t) => { for (let c = 0; c < C; c += 1) chunk[c * n + t] = r[c]; });
    rows = [];
    const got = await stream.push(chunk, n);
    if (steps) { writeSamples(got); return; }
    const s = got.outputs[scores];
    const k = Array.from(s.dims).slice(1).reduce((a, b) => a * b, 1);  // a window's values (a forecast's T x H x Q)
    got.start.forEach((start, i) => {
      const label = hasLabel ? `,${names ? names[Number(got.outputs.label.data[i])] : got.outputs.label.data[i]}` : '';
      const values = Array.from(s.data.slice(i * k, (i + 1) * k), (v) => Number(v).toPrecision(9));  // float32 exactly
      out.write(`${id},${start},${got.end[i]}${label},${values.join(',')}\n`);
    });
  };

  const endRecording = async () => {  // the last chunk; a per-step stream then answers its last samples
    await flush();
    if (steps) writeSamples(await stream.finish());
  };

  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  for await (const line of lines) {
    lineNo += 1;
    if (!line.trim()) continue;
    const cells = line.split(',').map((c) => c.trim());
    if (keep === null) {
      const isHeader = cells.some((c) => c !== '' && !Number.isFinite(Number(c)));
      header = isHeader ? cells : cells.map((_, j) => String(j));
      keep = signalColumns(bundle.manifest, isHeader ? cells : null, cells.length, file);  // by name where named
      idColumn = w.recording_column ? header.indexOf(w.recording_column) : -1;
      if (steps) {  // pipeline predict's per-sample columns (runtime/tasks.py step_columns)
        const multilabel = bundle.task === 'multilabel';
        const labelNames = names || Array.from({ length: K }, (_, j) => String(j));
        const columns = multilabel ? [...labelNames.map((c) => `label_${c}`), ...labelNames.map((c) => `probability_${c}`)]
          : ['label', ...(bundle.task === 'binary' ? [`probability_${labelNames[1]}`] : labelNames.map((c) => `probability_${c}`))];
        out.write(['recording', 'sample', ...columns].join(',') + '\n');
        if (isHeader) continue;
      }
      const labelColumns = hasLabel ? ['label'] : [];
      const k = bundle.manifest.model.n_outputs;
      // the columns pipeline predict writes: probability_<class> for classes, h1.. per target and quantile for a
      // forecast, the output's name otherwise
      const scoreColumns = w.horizon ? forecastColumns(w)
        : names ? (k > 1 ? names.map((c) => `probability_${c}`) : [`probability_${names[1]}`])
          : (k > 1 ? Array.from({ length: k }, (_, j) => `${scores}_${j}`) : [scores]);
      if (!steps) out.write(['recording', 'start', 'end', ...labelColumns, ...scoreColumns].join(',') + '\n');
      if (isHeader) continue;
    }
    const rowId = idColumn >= 0 ? cells[idColumn] : 'recording';
    if (rowId !== id) { // a new recording: finish the last one's chunk, then a fresh stream
      if (stream) await endRecording();
      stream = bundle.stream(); id = rowId;
    }
    const values = keep.map((j) => Number(cells[j]));
    if (values.some((v) => !Number.isFinite(v))) throw new BundleError(`${file}: line ${lineNo}: a sample is not a number`);
    rows.push(values);
    if (rows.length >= chunkRows) await flush();
  }
  if (stream) await endRecording();
  return 0;
}

// A forecast's columns as pipeline predict names them (runtime/tasks.py): 'h1'..'hH' for one target, '<target>_h1'..
// for several, each with '_q<quantile>' for a quantile forecast; target-major, then step, then quantile.
function forecastColumns(w) {
  const columns = [];
  for (const target of w.target_names) {
    for (let h = 1; h <= w.horizon; h += 1) {
      const stem = w.target_names.length === 1 ? `h${h}` : `${target}_h${h}`;
      if (w.quantiles) columns.push(...w.quantiles.map((q) => `${stem}_q${q}`));
      else columns.push(stem);
    }
  }
  return columns;
}

if (require.main === module) {
  main(process.argv).then((code) => { process.exitCode = code; }, (err) => {
    console.error(`Error: ${err instanceof BundleError ? err.message : err.stack}`);
    process.exitCode = 2;
  });
}
