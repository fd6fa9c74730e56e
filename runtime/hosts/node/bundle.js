'use strict';
// Load a pipeline bundle in Node.js: check its manifest and sha256 sums, then run the model and loss
// graphs with onnxruntime-node. No Python or torch involved.
//
//   const { loadBundle } = require('./bundle');
//   const bundle = await loadBundle('artifacts/demo/bundle');
//   const outputs = await bundle.predict(Float32Array.from(series), [n, channels, length]);
//   const { loss, perSampleLoss } = await bundle.loss(outputs[bundle.outputs[0]], targets);

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const FORMAT_VERSIONS = [1];

class BundleError extends Error {}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function readManifest(dir) {
  const file = path.join(dir, 'manifest.json');
  if (!fs.existsSync(file)) throw new BundleError(`${file}: not found; ${dir} is not a bundle (pipeline export writes one)`);
  const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!FORMAT_VERSIONS.includes(manifest.format_version)) {
    throw new BundleError(`${file}: format_version ${manifest.format_version} is not supported (this host reads ${FORMAT_VERSIONS})`);
  }
  return manifest;
}

function checkFiles(dir, manifest) {
  for (const [name, entry] of Object.entries(manifest.files)) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) throw new BundleError(`${file}: listed in manifest.json but missing`);
    const size = fs.statSync(file).size;
    if (size !== entry.bytes) throw new BundleError(`${file}: is ${size} bytes but manifest.json says ${entry.bytes}`);
    if (sha256(file) !== entry.sha256) throw new BundleError(`${file}: sha256 differs from manifest.json (the file was altered)`);
  }
}

// A typed array of the ONNX dtype named in the manifest or golden data.
function typedArray(dtype, values) {
  if (dtype === 'float32') return Float32Array.from(values);
  if (dtype === 'int64') return BigInt64Array.from(values, (v) => BigInt(v));
  throw new BundleError(`dtype ${dtype} is not supported`);
}

function tensor(dtype, data, dims) {
  const typed = ArrayBuffer.isView(data) ? data : typedArray(dtype, data);
  return new ort.Tensor(dtype, typed, dims);
}

class Bundle {
  constructor(dir, manifest, model, lossSession) {
    this.dir = dir;
    this.manifest = manifest;
    this.task = manifest.task;
    this.classes = manifest.classes;
    this.outputs = manifest.outputs;
    this.modelSession = model;
    this.lossSession = lossSession;
  }

  // x: Float32Array (or numbers) of n*channels*length values; dims [n, channels, length].
  async predict(x, dims) {
    const spec = this.manifest.input;
    if (dims.length !== 3 || dims[1] !== spec.channels) {
      throw new BundleError(`x: dims [${dims}] must be [n, ${spec.channels}, length]`);
    }
    if (spec.length.fixed !== undefined && dims[2] !== spec.length.fixed) {
      throw new BundleError(`x: length ${dims[2]} but this model takes exactly ${spec.length.fixed}`);
    }
    const result = await this.modelSession.run({ x: tensor('float32', x, dims) });
    return Object.fromEntries(this.outputs.map((name) => [name, result[name]]));
  }

  // prediction: the model's first output (ort.Tensor or {data, dims}); target: numbers or a typed array.
  async loss(prediction, target) {
    if (!this.lossSession) throw new BundleError(`${this.dir}: has no loss.onnx; re-export with --format onnx or all`);
    const [predSpec, targetSpec] = this.manifest.loss.inputs;
    const n = prediction.dims[0];
    const targetDims = targetSpec.shape.map((d) => (d === 'batch' ? n : d));
    const result = await this.lossSession.run({
      prediction: tensor(predSpec.dtype, prediction.data, prediction.dims),
      target: tensor(targetSpec.dtype, target, targetDims),
    });
    return { loss: Number(result.loss.data[0]), perSampleLoss: result.per_sample_loss };
  }
}

async function loadBundle(dir, { threads } = {}) {
  const manifest = readManifest(dir);
  checkFiles(dir, manifest);
  if (!manifest.files['model.onnx']) throw new BundleError(`${dir}: has no model.onnx; re-export with --format onnx or all`);
  const options = { graphOptimizationLevel: 'all', executionProviders: ['cpu'] };
  if (threads) options.intraOpNumThreads = threads;
  const model = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), options);
  const lossSession = manifest.files['loss.onnx']
    ? await ort.InferenceSession.create(path.join(dir, 'loss.onnx'), options) : null;
  return new Bundle(dir, manifest, model, lossSession);
}

module.exports = { Bundle, BundleError, loadBundle, sha256, tensor };
