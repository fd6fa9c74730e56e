// The page: load a bundle (?bundle=URL, default bundle/; ?precision=int8 or auto runs model.int8.onnx),
// predict pasted or uploaded series, plot them.
// ?selfcheck=1 runs the golden data (or ?cases=URL) and POSTs the rows to ?report=URL.
// ?publicKey=URL: the PEM public key the bundle must be signed with (model.sig checked before anything loads).
// ?play=URL plays that recording (.csv, a row per time step) through the live view at once and POSTs what
// was streamed (every window's start and scores) to ?report=URL.
import { BundleError, checkCases, loadBundle } from './bundle.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one keeps the page servable anywhere

function parseSeries(text, channels) {
  const rows = text.split('\n').map((l) => l.trim()).filter((l) => l && !/^[a-z]/i.test(l));
  const series = rows.map((row) => row.split('|').map((ch) => ch.split(/[\s,;]+/).filter(Boolean).map(Number)));
  if (!series.length) throw new Error('no series: paste one per line');
  const length = series[0][0].length;
  for (const [i, s] of series.entries()) {
    if (s.length !== channels) throw new Error(`line ${i + 1}: ${s.length} channels, the model takes ${channels}`);
    if (s.some((ch) => ch.length !== length || ch.some((v) => !Number.isFinite(v)))) {
      throw new Error(`line ${i + 1}: every series needs ${length} numeric values per channel`);
    }
  }
  return { data: Float32Array.from(series.flat(2)), dims: [series.length, channels, length], series };
}

function plot(series) {
  const canvas = $('plot'); const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const values = series.flat(2); const lo = Math.min(...values); const hi = Math.max(...values);
  series.forEach((s, k) => s.forEach((ch) => {
    g.strokeStyle = `hsl(${(k * 67) % 360} 70% 45%)`; g.beginPath();
    ch.forEach((v, i) => g[i ? 'lineTo' : 'moveTo'](i * canvas.width / Math.max(ch.length - 1, 1),
      canvas.height - ((v - lo) / (hi - lo || 1)) * (canvas.height - 10) - 5));
    g.stroke();
  }));
}

function showPredictions(bundle, outputs, n) {
  const scores = outputs[bundle.outputs[bundle.outputs.length > 1 ? 1 : 0]];
  const k = scores.dims[1] || 1;
  const names = bundle.classes || Array.from({ length: k }, (_, j) => String(j));
  let html = '<table><tr><th>series</th>' + (outputs.label ? '<th>label</th>' : '')
    + names.map((c) => `<th>${bundle.outputs[1] || bundle.outputs[0]} ${c}</th>`).join('') + '</tr>';
  for (let i = 0; i < n; i += 1) {
    html += `<tr><td>${i + 1}</td>` + (outputs.label ? `<td>${names[Number(outputs.label.data[i])]}</td>` : '')
      + Array.from(scores.data.slice(i * k, (i + 1) * k), (v) => `<td>${Number(v).toPrecision(4)}</td>`).join('') + '</tr>';
  }
  $('predictions').innerHTML = `${html}</table>`;
}

// A per-sample .csv as channels: the bundle's recording, time and label columns left out (by header name).
function parseRecording(text, bundle) {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const first = lines[0].split(',');
  const header = first.some((c) => c.trim() !== '' && !Number.isFinite(Number(c))) ? first.map((c) => c.trim()) : null;
  // the signal columns in the model's channel order: by header name where training recorded the names
  const keep = globalThis.pipelineBundleCore.signalColumns(bundle.manifest, header, first.length, 'the recording');
  const rows = (header ? lines.slice(1) : lines).map((l) => l.split(','));
  const C = bundle.manifest.input.channels;
  const T = rows.length;
  const data = new Float32Array(C * T);
  rows.forEach((r, t) => keep.forEach((j, c) => { data[c * T + t] = Number(r[j]); }));
  if (data.some((v) => !Number.isFinite(v))) throw new Error('the recording holds a value that is not a number');
  return { data, C, T };
}

// Plot lines (arrays of {x, y}) on a canvas scaled to [x0, x1] and to the values' range; `shade` ({start, values},
// values in [-1, 1]) tints the band behind each sample from `start` on: red where the value is positive, blue
// where negative, as strong as its magnitude; `fan` ({lower, median, upper}: arrays of {x, y}) is a forecast drawn
// ahead of the lines, its interval filled and its median dashed; `bands` ({x, label} per sample; label null for
// none) colours the band behind each sample by its predicted label, in the colour of that class's score line.
// Returns how many samples were shaded or coloured.
function drawLines(canvas, lines, x0, x1, shade = null, fan = null, bands = null) {
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const step = canvas.width / Math.max(x1 - x0, 1);
  let shaded = 0;
  if (bands) {
    bands.forEach(({ x, label }) => {
      if (label === null) return;
      g.fillStyle = `hsla(${(label * 67) % 360} 70% 55% / 0.3)`;
      g.fillRect((x - x0) * step - step / 2, 0, step, canvas.height);
      shaded += 1;
    });
  }
  if (shade) {
    shade.values.forEach((v, i) => {
      g.fillStyle = `hsla(${v >= 0 ? 0 : 220} 85% 50% / ${(0.6 * Math.min(Math.abs(v), 1)).toFixed(3)})`;
      g.fillRect((shade.start + i - x0) * step - step / 2, 0, step, canvas.height);
      shaded += 1;
    });
  }
  const ys = lines.flat().concat(fan ? [...fan.lower, ...fan.upper] : []).map((p) => p.y);
  if (!ys.length) return shaded;
  const lo = Math.min(...ys); const hi = Math.max(...ys);
  const px = (p) => (p.x - x0) / Math.max(x1 - x0, 1) * canvas.width;
  const py = (p) => canvas.height - ((p.y - lo) / (hi - lo || 1)) * (canvas.height - 10) - 5;
  if (fan) {
    g.fillStyle = 'hsla(30 90% 50% / 0.25)'; g.beginPath();
    fan.upper.forEach((p, i) => g[i ? 'lineTo' : 'moveTo'](px(p), py(p)));
    [...fan.lower].reverse().forEach((p) => g.lineTo(px(p), py(p)));
    g.closePath(); g.fill();
    g.strokeStyle = 'hsl(30 90% 40%)'; g.setLineDash([4, 3]); g.beginPath();
    fan.median.forEach((p, i) => g[i ? 'lineTo' : 'moveTo'](px(p), py(p)));
    g.stroke(); g.setLineDash([]);
  }
  lines.forEach((line, k) => {
    g.strokeStyle = `hsl(${(k * 67) % 360} 70% 45%)`; g.beginPath();
    line.forEach((p, i) => g[i ? 'lineTo' : 'moveTo'](px(p), py(p)));
    g.stroke();
  });
  return shaded;
}

// The saliency map (bundles exported with --saliency) of completed window i: its one map, or (one map per output)
// the map of the output that scored highest.
function windowMap(out, i, row) {
  const m = out.outputs.saliency;
  const L = m.dims[m.dims.length - 1];
  const j = m.dims.length === 3 ? row.indexOf(Math.max(...row)) : 0;
  const at = m.dims.length === 3 ? (i * m.dims[1] + j) * L : i * L;
  return Array.from(m.data.slice(at, at + L), Number);
}

// A forecasting bundle's fan for completed window i ending at `end`: its first target's median and outer quantiles
// (a point forecast: the forecast itself as all three) over the next H samples.
function windowFan(bundle, out, i, end) {
  const f = out.outputs.forecast; const [, , H] = f.dims; const Q = f.dims[3] || 1;
  const per = f.data.length / f.dims[0];
  const at = (h, q) => ({ x: end + h, y: Number(f.data[i * per + h * Q + q]) });
  const steps = Array.from({ length: H }, (_, h) => h);
  return { lower: steps.map((h) => at(h, 0)), median: steps.map((h) => at(h, Math.floor(Q / 2))),
    upper: steps.map((h) => at(h, Q - 1)) };
}

// Samples at..at+n of a recording as one chunk (channel by channel), each added to the plotted `signal`.
function nextChunk({ data, C, T }, at, n, signal) {
  const part = new Float32Array(C * n);
  for (let c = 0; c < C; c += 1) {
    part.set(data.subarray(c * T + at, c * T + at + n), c * n);
    for (let k = 0; k < n; k += 1) signal[c].push({ x: at + k, y: data[c * T + at + k] });
  }
  return part;
}

// Play a recording through bundle.stream(): `chunk` samples per tick (every `delay` ms; 0: as fast as it runs),
// the signal and every completed window's scores plotted over time; a forecaster's newest forecast is drawn
// ahead of the signal as a fan. Returns what was streamed.
async function play(bundle, recording, chunk, delay) {
  if (bundle.steps) return playSteps(bundle, recording, chunk, delay);
  const { C, T } = recording;
  const stream = bundle.stream();
  const scoresName = bundle.outputs[bundle.outputs.length > 1 ? 1 : 0];
  const withMaps = bundle.outputs.includes('saliency');
  const forecasts = Boolean(bundle.manifest.window && bundle.manifest.window.horizon);
  const streamed = { start: [], scores: [], ...(withMaps ? { saliency: [], shaded: 0 } : {}),
    ...(forecasts ? { fan: null } : {}) };
  let shade = null; let fan = null;
  const signal = Array.from({ length: C }, () => []);
  const scores = [];
  for (let at = 0; at < T; at += chunk) {
    const n = Math.min(chunk, T - at);
    const out = await stream.push(nextChunk(recording, at, n, signal), n);
    const s = out.outputs[scoresName]; const k = s.dims[1] || 1;
    out.end.forEach((end, i) => {
      const row = Array.from(s.data.slice(i * k, (i + 1) * k), Number);
      streamed.start.push(out.start[i]); streamed.scores.push(row);
      row.forEach((v, j) => { (scores[j] = scores[j] || []).push({ x: end, y: v }); });
      if (withMaps) {
        shade = { start: out.start[i], values: windowMap(out, i, row) };
        streamed.saliency.push(shade.values);
      }
      if (forecasts) fan = windowFan(bundle, out, i, end);
    });
    if (forecasts && fan) streamed.fan = { start: fan.median[0].x, ...Object.fromEntries(
      ['lower', 'median', 'upper'].map((k) => [k, fan[k].map((p) => p.y)])) };
    // the signal shaded by the newest window's saliency map (where the model looked for its latest answer), and
    // a forecaster's newest forecast as a fan ahead of it
    const ahead = fan ? fan.median.length : 0;
    const shaded = drawLines($('signal'), signal, 0, at + n + ahead, shade, fan);
    drawLines($('scores'), scores, 0, at + n);
    if (withMaps) streamed.shaded = shaded;
    const names = bundle.classes || [];
    const last = streamed.scores[streamed.scores.length - 1];
    // the legend names each score line in its colour (the lines' colours follow drawLines's order)
    const key = (j) => `<span style="color:hsl(${(j * 67) % 360} 70% 45%)">&#9632; ${names[j] ?? j}</span>`;
    $('live').innerHTML = `sample ${at + n} of ${T}; ${streamed.start.length} windows scored`
      + (last ? `; ${scoresName} of the window ending at ${streamed.start[streamed.start.length - 1] + stream.length}: `
        + last.map((v, j) => `${key(j)} ${v.toPrecision(3)}`).join(', ') : '');
    if (delay) await new Promise((r) => setTimeout(r, delay));
  }
  return streamed;
}

// A per-step bundle's live view (--window-label each): the signal coloured by each sample's predicted label as soon
// as the stream answers it (every window covering it has arrived; the rest when the recording ends), and each
// class's stitched probability over time. Returns what was streamed: every answered sample, its label and
// probabilities, and how many samples were coloured.
async function playSteps(bundle, recording, chunk, delay) {
  const { C, T } = recording;
  const stream = bundle.stream();
  const names = bundle.classes || [];
  const streamed = { sample: [], label: [], probabilities: [], coloured: 0 };
  const signal = Array.from({ length: C }, () => []);
  const probabilities = []; const bands = [];
  const take = (got) => {
    const [m, K] = got.probabilities.dims;
    for (let i = 0; i < m; i += 1) {
      const row = Array.from(got.probabilities.data.slice(i * K, (i + 1) * K), Number);
      const label = got.label.dims.length === 1 ? Number(got.label.data[i])
        : Array.from(got.label.data.slice(i * K, (i + 1) * K), Number);
      // the colour: the class (binary: 1 coloured, 0 not; multilabel: the first label on)
      const colour = bundle.task === 'multiclass' ? label : bundle.task === 'binary' ? (label[0] ? 1 : null)
        : (label.indexOf(1) >= 0 ? label.indexOf(1) : null);
      streamed.sample.push(got.sample[i]); streamed.label.push(label); streamed.probabilities.push(row);
      bands.push({ x: got.sample[i], label: colour });
      row.forEach((v, j) => { (probabilities[j] = probabilities[j] || []).push({ x: got.sample[i], y: v }); });
    }
  };
  const draw = (until) => {
    streamed.coloured = drawLines($('signal'), signal, 0, until, null, null, bands);
    drawLines($('scores'), probabilities, 0, until);
    const last = streamed.sample.length - 1;
    const key = (j) => `<span style="color:hsl(${(j * 67) % 360} 70% 45%)">&#9632; ${names[j] ?? j}</span>`;
    $('live').innerHTML = `sample ${until} of ${T}; ${streamed.sample.length} samples labelled`
      + (last >= 0 ? `; sample ${streamed.sample[last]}: ${streamed.probabilities[last].map((v, j) => `${key(j)} `
        + `${v.toPrecision(3)}`).join(', ')}` : '');
  };
  for (let at = 0; at < T; at += chunk) {
    const n = Math.min(chunk, T - at);
    take(await stream.push(nextChunk(recording, at, n, signal), n));
    draw(at + n);
    if (delay) await new Promise((r) => setTimeout(r, delay));
  }
  take(await stream.finish());
  draw(T);
  return streamed;
}

async function selfcheck(bundle) {
  const cases = params.get('cases') ? await (await fetch(params.get('cases'))).json() : bundle.golden;
  let rows;
  try {
    rows = await checkCases(bundle, cases, { required: params.get('cases') ? [] : ['model', 'loss'] });
  } catch (err) { // cases not in the golden.json layout: one line naming the file, as the other kits say it
    throw new BundleError(`${params.get('cases') ? 'cases.json' : 'golden.json'}: not in the golden.json layout `
      + `(${String(err.message).split('\n')[0].slice(0, 200)}); re-export the bundle`);
  }
  return { ok: rows.every((r) => r.ok), precision: bundle.precision, signedBy: bundle.signedBy, rows };
}

async function report(result) {
  $('result').textContent = JSON.stringify(result, null, 1);
  if (params.get('report')) await fetch(params.get('report'), { method: 'POST', body: JSON.stringify(result) });
}

// ?bundles=N (serve.py with several bundles): check bundle/0/ .. bundle/N-1/ in turn, one report for them all.
async function checkMany(count, publicKey) {
  const results = [];
  for (let i = 0; i < count; i += 1) {
    try {
      const bundle = await loadBundle(`bundle/${i}/`, { precision: params.get('precision') || 'fp32', publicKey });
      results.push(await selfcheck(bundle));
    } catch (err) {
      results.push({ ok: false, error: err instanceof BundleError ? err.message : `${err.name}: ${err.stack}` });
    }
  }
  await report({ ok: results.every((r) => r.ok), many: results });
}

async function main() {
  let bundle;
  if (params.get('bundles')) {
    const keyUrl = params.get('publicKey');
    const publicKey = keyUrl ? { pem: await (await fetch(keyUrl)).text(), source: keyUrl.split('/').pop() } : null;
    await checkMany(Number(params.get('bundles')), publicKey);
    return;
  }
  try {
    const keyUrl = params.get('publicKey');
    const publicKey = keyUrl ? { pem: await (await fetch(keyUrl)).text(), source: keyUrl.split('/').pop() } : null;
    bundle = await loadBundle(params.get('bundle') || 'bundle/', { precision: params.get('precision') || 'fp32', publicKey });
  } catch (err) {
    $('status').textContent = `Error: ${err.message}`; $('status').className = 'error';
    if (params.get('selfcheck')) await report({ ok: false, error: err.message });
    return;
  }
  $('status').textContent = `${bundle.task} model (${bundle.precision}), ${bundle.manifest.input.channels} channel(s); `
    + `outputs ${bundle.outputs.join(', ')}`
    + (bundle.signedBy ? `; signature verified (key ${bundle.signedBy.slice(0, 16)})` : '');
  if (params.get('selfcheck')) {
    try { await report(await selfcheck(bundle)); } catch (err) { await report({ ok: false, error: String(err) }); }
  }
  if (params.get('play')) {
    try {
      const recording = parseRecording(await (await fetch(params.get('play'))).text(), bundle);
      await report({ ok: true, streamed: await play(bundle, recording, Number(params.get('chunk') || 37), 0) });
    } catch (err) { await report({ ok: false, error: String(err) }); }
  }
  $('play').onclick = async () => {
    try {
      const recording = parseRecording(await $('recording').files[0].text(), bundle);
      await play(bundle, recording, Math.max(1, Number($('chunk').value) || 8), 20);
    } catch (err) { $('live').innerHTML = `<span class="error">${err.message}</span>`; }
  };
  $('file').onchange = async () => { $('series').value = await $('file').files[0].text(); };
  $('predict').onclick = async () => {
    try {
      const { data, dims, series } = parseSeries($('series').value, bundle.manifest.input.channels);
      plot(series);
      showPredictions(bundle, await bundle.predict(data, dims), dims[0]);
    } catch (err) { $('predictions').innerHTML = `<p class="error">${err.message}</p>`; }
  };
}

main();
