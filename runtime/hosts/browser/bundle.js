// Load a pipeline bundle in the browser with onnxruntime-web (wasm): sha256 checks against the
// manifest (Web Crypto), then the model and loss graphs. Needs the global `ort` (ort.min.js).
//
//   const bundle = await loadBundle('bundle/');
//   const outputs = await bundle.predict(Float32Array.from(series), [n, channels, length]);

export class BundleError extends Error {}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new BundleError(`${url}: HTTP ${response.status}; is the bundle served there?`);
  return new Uint8Array(await response.arrayBuffer());
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function tensor(dtype, data, dims) {
  if (ArrayBuffer.isView(data)) return new ort.Tensor(dtype, data, dims);
  if (dtype === 'int64') return new ort.Tensor(dtype, BigInt64Array.from(data, (v) => BigInt(v)), dims);
  return new ort.Tensor(dtype, Float32Array.from(data), dims);
}

export class Bundle {
  constructor(base, manifest, model, loss) {
    Object.assign(this, { base, manifest, model, lossSession: loss });
    this.task = manifest.task;
    this.classes = manifest.classes;
    this.outputs = manifest.outputs;
  }

  async predict(x, dims) {
    const spec = this.manifest.input;
    if (dims.length !== 3 || dims[1] !== spec.channels) throw new BundleError(`x: dims [${dims}] must be [n, ${spec.channels}, length]`);
    if (spec.length.fixed !== undefined && dims[2] !== spec.length.fixed) {
      throw new BundleError(`x: length ${dims[2]} but this model takes exactly ${spec.length.fixed}`);
    }
    const result = await this.model.run({ x: tensor('float32', x, dims) });
    return Object.fromEntries(this.outputs.map((name) => [name, result[name]]));
  }

  async loss(prediction, target) {
    const [predSpec, targetSpec] = this.manifest.loss.inputs;
    const n = prediction.dims[0];
    const dims = targetSpec.shape.map((d) => (d === 'batch' ? n : d));
    const result = await this.lossSession.run({
      prediction: tensor(predSpec.dtype, prediction.data, prediction.dims),
      target: tensor(targetSpec.dtype, target, dims),
    });
    return { loss: Number(result.loss.data[0]), perSampleLoss: result.per_sample_loss };
  }
}

export async function loadBundle(base) {
  const manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(`${base}manifest.json`)));
  if (manifest.format_version !== 1) throw new BundleError(`manifest.json: format_version ${manifest.format_version} is not supported`);
  const files = {};
  for (const [name, entry] of Object.entries(manifest.files)) {
    const bytes = await fetchBytes(`${base}${name}`);
    if (bytes.length !== entry.bytes) throw new BundleError(`${name}: is ${bytes.length} bytes but manifest.json says ${entry.bytes}`);
    if (await sha256Hex(bytes) !== entry.sha256) throw new BundleError(`${name}: sha256 differs from manifest.json (the file was altered)`);
    files[name] = bytes;
  }
  if (!files['model.onnx'] || !files['loss.onnx']) throw new BundleError('the bundle has no ONNX graphs; re-export with --format onnx or all');
  const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
  const model = await ort.InferenceSession.create(files['model.onnx'], options);
  const loss = await ort.InferenceSession.create(files['loss.onnx'], options);
  const bundle = new Bundle(base, manifest, model, loss);
  bundle.golden = files['golden.json'] ? JSON.parse(new TextDecoder().decode(files['golden.json'])) : null;
  return bundle;
}

// Rows {graph, output, shape, max_abs, max_rel, ok} for cases in the golden.json layout.
export async function checkCases(bundle, cases) {
  const rows = [];
  for (const c of Array.isArray(cases) ? cases : [cases]) {
    const graphs = {};
    if (c.model) graphs.model = await bundle.predict(c.model.inputs.x.data, c.model.inputs.x.shape);
    if (c.loss) {
      const p = c.loss.inputs.prediction;
      const { loss, perSampleLoss } = await bundle.loss({ data: Float32Array.from(p.data), dims: p.shape }, c.loss.inputs.target.data);
      graphs.loss = { loss: { data: [loss], dims: [] }, per_sample_loss: perSampleLoss };
    }
    for (const [graph, outputs] of Object.entries(graphs)) {
      for (const [name, expected] of Object.entries(c[graph].outputs)) {
        const actual = outputs[name];
        let maxAbs = 0; let maxRel = 0;
        let ok = JSON.stringify(Array.from(actual.dims)) === JSON.stringify(expected.shape);
        for (let i = 0; ok && i < expected.data.length; i += 1) {
          const e = Number(expected.data[i]); const diff = Math.abs(Number(actual.data[i]) - e);
          maxAbs = Math.max(maxAbs, diff); maxRel = Math.max(maxRel, diff / Math.max(Math.abs(e), 1e-12));
          if (!(diff <= c.atol + c.rtol * Math.abs(e))) ok = false;
        }
        rows.push({ graph, output: name, shape: expected.shape, max_abs: maxAbs, max_rel: maxRel, ok });
      }
    }
  }
  return rows;
}
