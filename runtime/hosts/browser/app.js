// The page: load a bundle (?bundle=URL, default bundle/; ?precision=int8 or auto runs model.int8.onnx),
// predict pasted or uploaded series, plot them.
// ?selfcheck=1 runs the golden data (or ?cases=URL) and POSTs the rows to ?report=URL.
// ?publicKey=URL: the PEM public key the bundle must be signed with (model.sig checked before anything loads).
import { checkCases, loadBundle } from './bundle.js';

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

async function selfcheck(bundle) {
  const cases = params.get('cases') ? await (await fetch(params.get('cases'))).json() : bundle.golden;
  const rows = await checkCases(bundle, cases);
  return { ok: rows.every((r) => r.ok), precision: bundle.precision, signedBy: bundle.signedBy, rows };
}

async function report(result) {
  $('result').textContent = JSON.stringify(result, null, 1);
  if (params.get('report')) await fetch(params.get('report'), { method: 'POST', body: JSON.stringify(result) });
}

async function main() {
  let bundle;
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
