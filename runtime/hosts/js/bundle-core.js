// The one JavaScript implementation of a pipeline bundle, shared by the Node.js kit (require) and the
// browser page (<script>): manifest checks against the bundle's own JSON Schema (manifest.schema.json,
// generated from runtime/manifest.py), size and sha256 of every file, the model and loss graphs, and the
// tolerance comparison of outputs with expected ones. Each host passes its own I/O and onnxruntime:
//
//   io = { label(name), readBytes(name) -> Uint8Array, sha256(bytes) -> hex, ort, sessionSource(name, bytes) }
(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.pipelineBundleCore = factory();
}(typeof self !== 'undefined' ? self : this, () => {
  'use strict';

  const FORMAT_VERSIONS = [1];
  const MANIFEST_FILE = 'manifest.json';
  const SCHEMA_FILE = 'manifest.schema.json';
  const MODEL_ONNX = 'model.onnx';
  const MODEL_INT8 = 'model.int8.onnx'; // pipeline export --quantize int8
  const LOSS_ONNX = 'loss.onnx';
  const PRECISIONS = ['fp32', 'int8', 'auto']; // which model graph runs; auto: int8 when the bundle has one

  class BundleError extends Error {}

  const decode = (bytes) => new TextDecoder().decode(bytes);

  function typeOf(value) {
    if (value === null) return 'null';
    if (Array.isArray(value)) return 'array';
    if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
    return typeof value; // string, boolean, object
  }

  const A = { integer: 'an integer', number: 'a number', string: 'a string', boolean: 'true or false', null: 'null',
    array: 'a list', object: 'an object' };
  const PLURAL = { integer: 'integers', number: 'numbers', string: 'strings', boolean: 'booleans', null: 'nulls',
    array: 'lists', object: 'objects' };

  // What a field must be, in the words of runtime/manifest.py and the C++ kit.
  function describe(schema) {
    if (schema.enum) return `one of ${schema.enum.map((v) => JSON.stringify(v)).join(', ')}`;
    if (schema.anyOf) return schema.anyOf.map(describe).join(' or ');
    if (schema.type === 'array' && schema.items && schema.items.type) return `a list of ${PLURAL[schema.items.type]}`;
    return A[schema.type] || 'any value';
  }

  // The first place where `value` breaks `schema` (the JSON Schema subset the manifest schema uses), as
  // [dotted field, what it must be, the value found], or null when it conforms.
  function schemaError(schema, value, path) {
    if (schema.anyOf) {
      if (schema.anyOf.some((s) => schemaError(s, value, path) === null)) return null;
      // the option of the value's own JSON type names the deeper problem (as the Python runtime does)
      const type = typeOf(value);
      const typed = schema.anyOf.find((s) => s.type && s.type !== 'null'
        && (s.type === type || (s.type === 'number' && type === 'integer')));
      return typed ? schemaError(typed, value, path) : [path, describe(schema), value];
    }
    if (schema.enum && !schema.enum.some((v) => v === value)) return [path, describe(schema), value];
    if (schema.type) {
      const type = typeOf(value);
      const ok = type === schema.type || (schema.type === 'number' && type === 'integer');
      if (!ok) return [path, describe(schema), value];
    }
    if (schema.minimum !== undefined && value < schema.minimum) return [path, `${describe(schema)} >= ${schema.minimum}`, value];
    if (typeOf(value) === 'array' && schema.items) {
      for (let i = 0; i < value.length; i += 1) {
        const err = schemaError(schema.items, value[i], `${path}[${i}]`);
        if (err) return err;
      }
    }
    if (typeOf(value) === 'object') {
      const join = (key) => (path ? `${path}.${key}` : key);
      for (const key of schema.required || []) {
        if (!(key in value)) return [join(key), describe(schema.properties[key] || {}), undefined];
      }
      for (const [key, item] of Object.entries(value)) {
        const sub = schema.properties && schema.properties[key];
        if (sub) {
          const err = schemaError(sub, item, join(key));
          if (err) return err;
        } else if (schema.additionalProperties === false) {
          return [join(key), 'absent (it is not part of this bundle format)', item];
        } else if (schema.additionalProperties) {
          const err = schemaError(schema.additionalProperties, item, join(key));
          if (err) return err;
        }
      }
    }
    return null;
  }

  // The manifest, parsed and checked against the schema: a BundleError naming the first bad field.
  function checkManifest(text, schemaText, where) {
    let manifest;
    try {
      manifest = JSON.parse(text);
    } catch (err) {
      throw new BundleError(`${where}: not valid JSON (${err.message}); re-export the bundle`);
    }
    const version = manifest && manifest.format_version;
    if (!FORMAT_VERSIONS.includes(version)) {
      throw new BundleError(`${where}: format_version ${version} is not supported (this host reads ${FORMAT_VERSIONS})`);
    }
    const err = schemaError(JSON.parse(schemaText), manifest, '');
    if (err) {
      const [field, must, got] = err;
      const found = got === undefined ? 'nothing' : JSON.stringify(got).slice(0, 60);
      throw new BundleError(`${where}: field '${field}' must be ${must}, got ${found}; the bundle is damaged or was `
        + 'not written by pipeline export, re-export it');
    }
    return manifest;
  }

  function tensor(ort, dtype, data, dims) {
    if (ArrayBuffer.isView(data)) return new ort.Tensor(dtype, data, dims);
    if (dtype === 'int64') return new ort.Tensor(dtype, BigInt64Array.from(data, (v) => BigInt(v)), dims);
    if (dtype === 'float32') return new ort.Tensor(dtype, Float32Array.from(data), dims);
    throw new BundleError(`dtype ${dtype} is not supported`);
  }

  class Bundle {
    constructor(ort, manifest, model, lossSession, golden, precision = 'fp32') {
      Object.assign(this, { ort, manifest, modelSession: model, lossSession, golden, precision });
      this.task = manifest.task;
      this.classes = manifest.classes;
      this.outputs = manifest.outputs;
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
      const result = await this.modelSession.run({ [spec.name]: tensor(this.ort, 'float32', x, dims) });
      return Object.fromEntries(this.outputs.map((name) => [name, result[name]]));
    }

    // prediction: the model's first output (ort.Tensor or {data, dims}); target: numbers or a typed array.
    async loss(prediction, target) {
      if (!this.lossSession) throw new BundleError(`the bundle has no ${LOSS_ONNX}; re-export with --format onnx or all`);
      const [predSpec, targetSpec] = this.manifest.loss.inputs;
      const n = prediction.dims[0];
      const targetDims = targetSpec.shape.map((d) => (d === 'batch' ? n : d));
      const result = await this.lossSession.run({
        [predSpec.name]: tensor(this.ort, predSpec.dtype, prediction.data, prediction.dims),
        [targetSpec.name]: tensor(this.ort, targetSpec.dtype, target, targetDims),
      });
      const [lossName, perSampleName] = this.manifest.loss.outputs;
      return { loss: Number(result[lossName].data[0]), perSampleLoss: result[perSampleName] };
    }
  }

  // Open a bundle through a host's io: manifest and schema, every file's size and sha256, then sessions.
  // precision: 'fp32' (model.onnx), 'int8' (model.int8.onnx) or 'auto' (int8 when the bundle has it).
  async function openBundle(io, { options = {}, precision = 'fp32' } = {}) {
    if (!PRECISIONS.includes(precision)) {
      throw new BundleError(`precision '${precision}' is not valid; choose one of ${PRECISIONS.join(', ')}`);
    }
    const manifest = checkManifest(decode(await io.readBytes(MANIFEST_FILE)), decode(await io.readBytes(SCHEMA_FILE)),
      io.label(MANIFEST_FILE));
    const files = {};
    for (const [name, entry] of Object.entries(manifest.files)) {
      const bytes = await io.readBytes(name);
      if (bytes.length !== entry.bytes) throw new BundleError(`${io.label(name)}: is ${bytes.length} bytes but manifest.json says ${entry.bytes}`);
      if (await io.sha256(bytes) !== entry.sha256) throw new BundleError(`${io.label(name)}: sha256 differs from manifest.json (the file was altered)`);
      files[name] = bytes;
    }
    if (!files[MODEL_ONNX]) throw new BundleError(`${io.label(MODEL_ONNX)}: not in the bundle; re-export with --format onnx or all`);
    if (precision === 'int8' && !files[MODEL_INT8]) {
      throw new BundleError(`${io.label(MODEL_INT8)}: not in the bundle; re-export with --quantize int8, or run it in fp32`);
    }
    const used = precision === 'int8' || (precision === 'auto' && files[MODEL_INT8]) ? 'int8' : 'fp32';
    const create = (name) => io.ort.InferenceSession.create(io.sessionSource(name, files[name]), options);
    const model = await create(used === 'int8' ? MODEL_INT8 : MODEL_ONNX);
    const lossSession = files[LOSS_ONNX] ? await create(LOSS_ONNX) : null;
    const golden = files['golden.json'] ? JSON.parse(decode(files['golden.json'])) : null;
    return new Bundle(io.ort, manifest, model, lossSession, golden, used);
  }

  // Largest differences of `actual` from `expected` and whether every value is within atol + rtol*|expected|.
  function compare(expected, actual, atol, rtol) {
    let maxAbs = 0;
    let maxRel = 0;
    let ok = JSON.stringify(Array.from(actual.dims)) === JSON.stringify(expected.shape)
      && expected.data.length === actual.data.length;
    for (let i = 0; ok && i < expected.data.length; i += 1) {
      const e = Number(expected.data[i]);
      const diff = Math.abs(Number(actual.data[i]) - e);
      maxAbs = Math.max(maxAbs, diff);
      maxRel = Math.max(maxRel, diff / Math.max(Math.abs(e), 1e-12));
      if (!(diff <= atol + rtol * Math.abs(e))) ok = false;
    }
    return { maxAbs, maxRel, ok };
  }

  // Rows {graph, output, shape, max_abs, max_rel, ok} for cases in the golden.json layout. An int8 model
  // graph is checked against its own golden outputs (model_int8) at the tolerance of manifest.json int8.
  async function checkCases(bundle, cases) {
    const rows = [];
    for (const given of Array.isArray(cases) ? cases : [cases]) {
      const c = { ...given };
      const tolerance = {};
      if (bundle.precision === 'int8' && c.model) {
        if (!c.model_int8) throw new BundleError('the cases have no model_int8 outputs for the int8 graph; re-export the bundle');
        c.model = c.model_int8;
        tolerance.model = [bundle.manifest.int8.golden_atol, bundle.manifest.int8.golden_rtol];
      }
      const graphs = {};
      if (c.model) graphs.model = await bundle.predict(c.model.inputs.x.data, c.model.inputs.x.shape);
      if (c.loss) {
        const p = c.loss.inputs.prediction;
        const { loss, perSampleLoss } = await bundle.loss({ data: Float32Array.from(p.data), dims: p.shape },
          c.loss.inputs.target.data);
        graphs.loss = { loss: { data: [loss], dims: [] }, per_sample_loss: perSampleLoss };
      }
      for (const [graph, outputs] of Object.entries(graphs)) {
        const [atol, rtol] = tolerance[graph] || [c.atol, c.rtol];
        const label = graph === 'model' && bundle.precision === 'int8' ? 'int8' : graph;
        for (const [name, expected] of Object.entries(c[graph].outputs)) {
          const { maxAbs, maxRel, ok } = compare(expected, outputs[name], atol, rtol);
          rows.push({ graph: label, output: name, shape: expected.shape, max_abs: maxAbs, max_rel: maxRel, ok });
        }
      }
    }
    return rows;
  }

  return { Bundle, BundleError, FORMAT_VERSIONS, PRECISIONS, checkCases, checkManifest, compare, openBundle, schemaError, tensor };
}));
