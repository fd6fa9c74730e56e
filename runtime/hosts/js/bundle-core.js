// The one JavaScript implementation of a pipeline bundle, shared by the Node.js kit (require) and the
// browser page (<script>): manifest checks against the bundle's own JSON Schema (manifest.schema.json,
// generated from runtime/manifest.py), size and sha256 of every file, the model and loss graphs, and the
// tolerance comparison of outputs with expected ones. Each host passes its own I/O and onnxruntime:
//
//   io = { label(name), readBytes(name) -> Uint8Array, sha256(bytes) -> hex, ort, sessionSource(name, bytes),
//          listFiles() -> names of every file but model.sig, or null where a host cannot list (the browser),
//          verify(key, data, derSignature) -> bool (ECDSA with the key's curve and hash) }
//
// Signed bundles (model.sig, OpenSSF model-signing: a Sigstore bundle whose DSSE envelope signs an in-toto
// statement of every file's sha256): given a public key, openBundle checks the signature and the signed file
// list before it reads anything else, with the messages of runtime/signature.py.
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

  // --- signatures: DER, base64 and PEM, just enough for public keys, certificates and ECDSA signatures ----
  const SIGNATURE_FILE = 'model.sig';
  const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
  const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
  const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
  const PREDICATE_TYPE = 'https://model_signing/signature/v1.0';
  const EC_PUBLIC_KEY = '1.2.840.10045.2.1';
  const CURVES = { '1.2.840.10045.3.1.7': ['P-256', 'SHA-256', 32], '1.3.132.0.34': ['P-384', 'SHA-384', 48],
    '1.3.132.0.35': ['P-521', 'SHA-512', 66] };
  const KEY_TYPES = { '1.2.840.113549.1.1.1': 'RSA', '1.3.101.112': 'Ed25519', '1.3.101.113': 'Ed448',
    '1.2.840.10040.4.1': 'DSA' };
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

  function b64decode(text) {
    const clean = text.replace(/=+$/, '');
    if (!/^[A-Za-z0-9+/]*$/.test(clean) || clean.length % 4 === 1) throw new Error('invalid base64');
    const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
    let bits = 0; let value = 0; let k = 0;
    for (const ch of clean) {
      value = (value << 6) | B64.indexOf(ch);
      bits += 6;
      if (bits >= 8) { bits -= 8; out[k++] = (value >> bits) & 0xff; }
    }
    return out.subarray(0, k);
  }

  function b64encode(bytes) {
    let out = '';
    for (let i = 0; i < bytes.length; i += 3) {
      const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
      out += B64[n >> 18] + B64[(n >> 12) & 63] + (i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=')
        + (i + 2 < bytes.length ? B64[n & 63] : '=');
    }
    return out;
  }

  // The DER element at bytes[i]: { tag, head (where its tag is), start (of its contents), end }.
  function tlv(bytes, i) {
    const tag = bytes[i];
    let length = bytes[i + 1];
    let start = i + 2;
    if (length & 0x80) {
      const count = length & 0x7f;
      if (count === 0 || count > 4) throw new Error('bad DER length');
      length = 0;
      for (let k = 0; k < count; k += 1) length = length * 256 + bytes[start + k];
      start += count;
    }
    if (tag === undefined || start + length > bytes.length) throw new Error('DER element runs past the end');
    return { tag, head: i, start, end: start + length };
  }

  function children(bytes, { start, end }) {
    const out = [];
    for (let i = start; i < end;) { const el = tlv(bytes, i); out.push(el); i = el.end; }
    return out;
  }

  function oid(bytes, { start, end }) {
    const parts = [Math.floor(bytes[start] / 40), bytes[start] % 40];
    let value = 0;
    for (let i = start + 1; i < end; i += 1) {
      value = value * 128 + (bytes[i] & 0x7f);
      if (!(bytes[i] & 0x80)) { parts.push(value); value = 0; }
    }
    return parts.join('.');
  }

  function pemBlocks(text) {
    const blocks = {};
    const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      if (!(m[1] in blocks)) blocks[m[1]] = b64decode(m[2].replace(/\s+/g, ''));
    }
    return blocks;
  }

  // The SubjectPublicKeyInfo (DER bytes) of an X.509 certificate.
  function certificateSpki(der) {
    const cert = tlv(der, 0);
    const tbs = children(der, children(der, cert)[0]);
    const fields = tbs[0].tag === 0xa0 ? tbs.slice(1) : tbs;
    const spki = fields[5]; // serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    return der.subarray(spki.head, spki.end);
  }

  // A trusted EC public key from PEM text (a public key, or a certificate's): its curve, DER and fingerprint
  // (sha256 of the PEM SubjectPublicKeyInfo, as model-signing records it in a signature's key hint).
  async function readPublicKey(pem, source, sha256) {
    let spki;
    try {
      const blocks = pemBlocks(pem);
      spki = blocks['PUBLIC KEY'] || (blocks.CERTIFICATE && certificateSpki(blocks.CERTIFICATE));
      if (!spki) {
        const found = Object.keys(blocks).length ? ` (found ${Object.keys(blocks).join(', ')})` : '';
        throw new BundleError(`${source}: holds no PEM public key${found}; export one with openssl ec -in KEY.pem `
          + '-pubout -out PUBLIC.pem');
      }
      const [algorithm] = children(spki, tlv(spki, 0));
      const ids = children(spki, algorithm);
      const kind = oid(spki, ids[0]);
      if (kind !== EC_PUBLIC_KEY) {
        throw new BundleError(`${source}: unsupported key type (${KEY_TYPES[kind] || kind}); bundles are signed and `
          + 'checked with EC keys (P-256, P-384 or P-521), see docs/signing.md');
      }
      const curveOid = ids[1] && ids[1].tag === 0x06 ? oid(spki, ids[1]) : '?';
      if (!CURVES[curveOid]) throw new BundleError(`${source}: unsupported EC curve ${curveOid}; use P-256, P-384 or P-521`);
      const [curve, hash, size] = CURVES[curveOid];
      const text = b64encode(spki).replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
      const fingerprint = await sha256(new TextEncoder().encode(`-----BEGIN PUBLIC KEY-----\n${text}\n-----END PUBLIC KEY-----\n`));
      return { curve, hash, size, spki, fingerprint, source };
    } catch (err) {
      if (err instanceof BundleError) throw err;
      throw new BundleError(`${source}: not a readable PEM public key; export it with openssl ec -in KEY.pem -pubout `
        + '-out PUBLIC.pem');
    }
  }

  // DSSE's pre-authentication encoding: what the envelope's signature signs.
  function pae(type, payload) {
    const head = new TextEncoder().encode(`DSSEv1 ${new TextEncoder().encode(type).length} ${type} ${payload.length} `);
    const out = new Uint8Array(head.length + payload.length);
    out.set(head);
    out.set(payload, head.length);
    return out;
  }

  // An ECDSA signature from DER (r, s) to IEEE P1363 (r || s, each `size` bytes), as WebCrypto takes it.
  function derToP1363(der, size) {
    const seq = tlv(der, 0);
    const [r, s] = children(der, seq);
    const out = new Uint8Array(2 * size);
    for (const [k, el] of [[0, r], [1, s]]) {
      let bytes = der.subarray(el.start, el.end);
      while (bytes.length > size && bytes[0] === 0) bytes = bytes.subarray(1);
      if (bytes.length > size) throw new Error('signature integer too long');
      out.set(bytes, (k + 1) * size - bytes.length);
    }
    return out;
  }

  // The statement of model.sig, the bytes its signature signs, and the DER signature; a BundleError when it is
  // not a model-signing Sigstore bundle.
  function readStatement(bytes, label) {
    const bad = (why) => new BundleError(`${label}: not a model-signing signature (${why}); sign the bundle again `
      + '(pipeline sign)');
    let bundle;
    try { bundle = JSON.parse(decode(bytes)); } catch (err) { throw bad(`not valid JSON: ${err.message}`); }
    if (!bundle || bundle.mediaType !== BUNDLE_MEDIA_TYPE) throw bad(`mediaType is not ${BUNDLE_MEDIA_TYPE}`);
    const envelope = bundle.dsseEnvelope;
    if (!envelope || envelope.payloadType !== PAYLOAD_TYPE) throw bad(`no DSSE envelope of ${PAYLOAD_TYPE}`);
    const sigs = envelope.signatures;
    if (!Array.isArray(sigs) || sigs.length !== 1 || !sigs[0] || typeof sigs[0] !== 'object') {
      throw bad('the envelope must hold exactly one signature');
    }
    let payload; let signature; let statement;
    try {
      payload = b64decode(String(envelope.payload || ''));
      signature = b64decode(String(sigs[0].sig || ''));
      statement = JSON.parse(decode(payload));
    } catch (err) {
      throw bad(`unreadable payload or signature: ${err.message}`);
    }
    if (!statement || statement._type !== STATEMENT_TYPE || statement.predicateType !== PREDICATE_TYPE) {
      throw bad(`the payload is not an in-toto statement of ${PREDICATE_TYPE}`);
    }
    return { statement, message: pae(PAYLOAD_TYPE, payload), signature, hint: keyHint(bundle, bad) };
  }

  // verificationMaterial.publicKey.hint of a parsed model.sig: each level absent (or null) or of its JSON type.
  function keyHint(bundle, bad) {
    const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
    const material = bundle.verificationMaterial;
    if (material === undefined || material === null) return undefined;
    if (!isObject(material)) throw bad('verificationMaterial is not an object');
    const publicKey = material.publicKey;
    if (publicKey === undefined || publicKey === null) return undefined;
    if (!isObject(publicKey)) throw bad('verificationMaterial.publicKey is not an object');
    const hint = publicKey.hint;
    if (hint !== undefined && hint !== null && typeof hint !== 'string') {
      throw bad('verificationMaterial.publicKey.hint is not a string');
    }
    return hint === null ? undefined : hint;
  }

  // Verify model.sig against the trusted key { pem, source }, then that the signed files are exactly the
  // bundle's (where the host can list them) with those digests. Returns { digests, fingerprint, files }.
  async function checkSignature(io, publicKey) {
    const key = await readPublicKey(publicKey.pem, publicKey.source, io.sha256);
    const label = io.label(SIGNATURE_FILE);
    let sigBytes;
    try {
      sigBytes = await io.readBytes(SIGNATURE_FILE);
    } catch (err) {
      throw new BundleError(`${label}: not found; the bundle is not signed (sign it with pipeline sign BUNDLE --key `
        + 'KEY.pem), and a public key was given, so it is refused');
    }
    const { statement, message, signature, hint } = readStatement(sigBytes, label);
    if (hint && hint !== key.fingerprint) {
      throw new BundleError(`${label}: signed by another key (${hint.slice(0, 16)}), not by ${key.source} `
        + `(${key.fingerprint.slice(0, 16)}); pass the public key the bundle was signed with, or sign it again`);
    }
    let ok = false;
    try { ok = await io.verify(key, message, signature); } catch (err) { ok = false; }
    if (!ok) {
      throw new BundleError(`${label}: the signature does not verify with ${key.source} (key `
        + `${key.fingerprint.slice(0, 16)}); the bundle was signed with another key or its signature was altered`);
    }
    const resources = statement.predicate && statement.predicate.resources;
    if (!Array.isArray(resources)) {
      throw new BundleError(`${label}: the signed statement lists no files; sign the bundle again (pipeline sign)`);
    }
    const digests = {};
    for (const item of resources) {
      if (!item || item.algorithm !== 'sha256' || typeof item.name !== 'string' || typeof item.digest !== 'string') {
        throw new BundleError(`${label}: a signed file entry is not {name, sha256 digest}; sign the bundle again`);
      }
      digests[item.name] = item.digest;
    }
    const present = io.listFiles ? await io.listFiles() : null;
    if (present) checkSignedList(io, digests, present);
    const files = {};
    for (const name of Object.keys(digests).sort()) {
      let bytes;
      try { bytes = await io.readBytes(name); } catch (err) {
        throw new BundleError(`${io.label(name)}: signed but missing (removed or renamed after signing)`);
      }
      if (await io.sha256(bytes) !== digests[name]) {
        throw new BundleError(`${io.label(name)}: sha256 differs from the signed digest (the file was changed after `
          + 'signing)');
      }
      files[name] = bytes;
    }
    return { digests, fingerprint: key.fingerprint, files };
  }

  // The bundle's files (but model.sig) are exactly the signed ones.
  function checkSignedList(io, digests, present) {
    for (const name of [...present].sort()) {
      if (!(name in digests)) throw new BundleError(`${io.label(name)}: not covered by the signature (added or renamed after signing)`);
    }
    for (const name of Object.keys(digests).sort()) {
      if (!present.includes(name)) throw new BundleError(`${io.label(name)}: signed but missing (removed or renamed after signing)`);
    }
  }

  const decode = (bytes) => new TextDecoder().decode(bytes);

  function typeOf(value) {
    if (value === null) return 'null';
    if (Array.isArray(value)) return 'array';
    // beyond 2^53 an integer is read as a float by the C++ kit: every host calls it a number
    if (typeof value === 'number') return Number.isInteger(value) && Math.abs(value) <= 2 ** 53 ? 'integer' : 'number';
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

  // Series per model call, the Python runtime's rule (runtime/inputs.py batch_rows): as many as fit 8 MiB of
  // float32 input, at most 256, and at most the manifest's batch_bound.series_per_call (kernel models).
  const BATCH_BYTES = 8 * 1024 * 1024;
  const MAX_BATCH = 256;
  function batchRows(channels, length, bound) {
    const rows = Math.min(MAX_BATCH, Math.max(1, Math.floor(BATCH_BYTES / Math.max(4 * channels * length, 1))));
    return bound ? Math.min(rows, bound.series_per_call) : rows;
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
      const [n, C, L] = dims;
      const rows = batchRows(C, L, this.manifest.batch_bound);
      if (n <= rows) {
        const result = await this.modelSession.run({ [spec.name]: tensor(this.ort, 'float32', x, dims) });
        return Object.fromEntries(this.outputs.map((name) => [name, result[name]]));
      }
      // larger inputs run in calls of `rows` series (as the Python runtime), the outputs joined in order
      const values = Float32Array.from(x);
      const parts = [];
      for (let start = 0; start < n; start += rows) {
        const count = Math.min(rows, n - start);
        const batch = values.subarray(start * C * L, (start + count) * C * L);
        parts.push(await this.modelSession.run({ [spec.name]: new this.ort.Tensor('float32', batch, [count, C, L]) }));
      }
      return Object.fromEntries(this.outputs.map((name) => [name, concatOutputs(parts.map((p) => p[name]), n)]));
    }

    // prediction: the model's first output (ort.Tensor or {data, dims}); target: numbers or a typed array.
    async loss(prediction, target) {
      if (!this.lossSession) throw new BundleError(`the bundle has no ${LOSS_ONNX}; re-export with --format onnx or all`);
      const [predSpec, targetSpec] = this.manifest.loss.inputs;
      const n = prediction.dims[0];
      // 'length': a per-step loss's steps, the prediction's last axis
      const targetDims = targetSpec.shape.map((d) => (d === 'batch' ? n : d === 'length' ? prediction.dims[2] : d));
      const result = await this.lossSession.run({
        [predSpec.name]: tensor(this.ort, predSpec.dtype, prediction.data, prediction.dims),
        [targetSpec.name]: tensor(this.ort, targetSpec.dtype, target, targetDims),
      });
      const [lossName, perSampleName] = this.manifest.loss.outputs;
      return { loss: Number(result[lossName].data[0]), perSampleLoss: result[perSampleName] };
    }

    // A stream over one live recording, cut into the manifest's windows (or { length, stride }); a per-step bundle
    // (window.label 'each') answers samples, stitched (StepStream).
    stream(options = {}) {
      return this.steps ? new StepStream(this, options) : new Stream(this, options);
    }

    get steps() {
      return Boolean(this.manifest.window && this.manifest.window.label === 'each');
    }

    // A forecasting bundle's next `steps` samples (default: the horizon) after the last window of one recording's
    // history (channels*T values, channel by channel): { data, dims: [targets, steps(, quantiles)] }. Past the
    // horizon, when every channel is a target, the median forecast is appended to the history and the model
    // forecasts again from the window that ends with it (the Python runtime's Bundle.forecast).
    async forecast(history, T, steps) {
      const w = this.manifest.window;
      if (!w || !w.horizon) {
        throw new BundleError(`forecast: a --task ${this.task} bundle; forecasting needs a bundle trained with --task forecast`);
      }
      const C = this.manifest.input.channels; const W = w.length; const H = w.horizon; const targets = w.targets;
      const Q = (w.quantiles || []).length || 1;
      steps = steps === undefined ? H : steps;
      if (!Number.isInteger(steps) || steps < 1) throw new BundleError(`steps must be a whole number of at least 1; got ${steps}`);
      if (!Number.isInteger(T) || T < W || history.length !== C * T) {
        throw new BundleError(`history: pass ${C} x T samples (channel by channel) with T at least the window of ${W}`);
      }
      if (steps > H && targets.length !== C) {
        throw new BundleError(`steps ${steps} is past the horizon of ${H}: rolling out feeds the forecast back as the next `
          + `input, which needs every channel to be a target (this bundle forecasts ${targets.length} of ${C}); ask for at most ${H}`);
      }
      let window = new Float32Array(C * W);
      for (let ch = 0; ch < C; ch += 1) window.set(Float32Array.from(history.slice(ch * T + T - W, ch * T + T)), ch * W);
      const out = new Float32Array(targets.length * steps * Q);
      const mid = Math.floor(Q / 2);
      for (let done = 0; done < steps; done += H) {
        const raw = (await this.predict(window, [1, C, W]))[this.outputs[0]].data;  // (1, T * H * Q), target-major
        const ahead = new Float32Array(C * H);
        targets.forEach((channel, i) => {
          for (let h = 0; h < H; h += 1) {
            for (let q = 0; q < Q; q += 1) {
              if (done + h < steps) out[(i * steps + done + h) * Q + q] = raw[(i * H + h) * Q + q];
            }
            ahead[channel * H + h] = raw[(i * H + h) * Q + mid];  // the median, fed back as the next samples
          }
        });
        const next = new Float32Array(C * W);
        for (let ch = 0; ch < C; ch += 1) {
          const joined = new Float32Array(W + H);
          joined.set(window.subarray(ch * W, ch * W + W), 0);
          joined.set(ahead.subarray(ch * H, ch * H + H), W);
          next.set(joined.subarray(H), ch * W);
        }
        window = next;
      }
      return { data: out, dims: Q > 1 ? [targets.length, steps, Q] : [targets.length, steps] };
    }
  }

  const STREAM_BATCH = 256; // windows per model call, so a chunk of any length needs bounded memory

  // One live recording as a stream (the runtime's runtime.windows.Stream): push chunks of any length, get the
  // outputs of every window they complete, in order, with their start samples. It keeps a ring of the last
  // length - 1 samples per channel and nothing of the history before them.
  //   const stream = bundle.stream();
  //   const { start, end, outputs } = await stream.push(chunk, n);  // chunk: channels*n values, channel by channel
  class Stream {
    constructor(bundle, { length, stride } = {}) {
      const w = bundle.manifest.window || {};
      const spec = bundle.manifest.input;
      this.bundle = bundle;
      this.channels = spec.channels;
      for (const [name, value] of [['length', length], ['stride', stride]]) { // absent: the bundle's; 0 is no default
        if (value !== undefined && value !== null && !(Number.isInteger(value) && value >= 1)) {
          throw new BundleError(`stream ${name}: ${value} must be a whole number of samples >= 1 (or left out for `
            + "the bundle's own)");
        }
      }
      this.length = length || w.length || spec.length.fixed || spec.length.trained;
      this.stride = stride || w.stride || this.length;
      this.hold = Math.max(this.length - 1, 1);
      this.ring = new Float32Array(this.channels * this.hold);
      this.seen = 0; // samples pushed so far
      this.nextStart = 0; // start sample of the next window to complete
    }

    async push(chunk, n) {
      const C = this.channels; const L = this.length;
      if (n === undefined && C === 1) n = chunk.length;
      if (!Number.isInteger(n) || n < 0 || chunk.length !== C * n) {
        throw new BundleError(`chunk: holds ${chunk.length} values; pass ${C} channel(s) x n samples, channel by channel`);
      }
      for (let i = 0; i < chunk.length; i += 1) {
        if (!Number.isFinite(Number(chunk[i]))) {
          throw new BundleError(`chunk: sample ${this.seen + (i % n)} of the stream is NaN or Inf; fill gaps before `
            + 'pushing (nothing of this chunk was used)');
        }
      }
      const seen = this.seen;
      const sample = (c, t) => (t >= seen ? Number(chunk[c * n + (t - seen)]) : this.ring[c * this.hold + (t % this.hold)]);
      const starts = [];
      for (let s = this.nextStart; s + L <= seen + n; s += this.stride) starts.push(s);
      if (starts.length) this.nextStart = starts[starts.length - 1] + this.stride;
      const parts = [];
      for (let i = 0; i < starts.length; i += STREAM_BATCH) {
        const batch = starts.slice(i, i + STREAM_BATCH);
        const x = new Float32Array(batch.length * C * L);
        batch.forEach((s, b) => {
          for (let c = 0; c < C; c += 1) for (let k = 0; k < L; k += 1) x[(b * C + c) * L + k] = sample(c, s + k);
        });
        parts.push(await this.bundle.predict(x, [batch.length, C, L]));
      }
      for (let t = Math.max(seen, seen + n - this.hold); t < seen + n; t += 1) {
        for (let c = 0; c < C; c += 1) this.ring[c * this.hold + (t % this.hold)] = Number(chunk[c * n + (t - seen)]);
      }
      this.seen += n;
      const outputs = {};
      for (const name of this.bundle.outputs) outputs[name] = concatOutputs(parts.map((p) => p[name]), starts.length);
      return { start: starts, end: starts.map((s) => s + L), outputs };
    }
  }

  // A per-step bundle's stream (--window-label each; the runtime's runtime.segments.StepStream). A sample's
  // probabilities are the mean of the per-step probabilities of every window covering it, its label the most
  // probable class (multiclass) or probability > 0.5 (binary, multilabel). push() answers every sample all of whose
  // windows have arrived; finish() answers the rest when the recording ends, the samples after the last window
  // from the tail window that ends at the last sample. Holds sums for at most one window of samples.
  //   const stream = bundle.stream();
  //   const { sample, probabilities, label } = await stream.push(chunk, n);  // probabilities: {data, dims: [m, K]}
  //   const rest = await stream.finish();
  class StepStream {
    constructor(bundle, options = {}) {
      this.windows = new Stream(bundle, options);
      this.bundle = bundle;
      this.output = bundle.outputs[1]; // the probabilities (binary: 'probability')
      this.argmax = bundle.task === 'multiclass';
      this.K = 0; // classes, from the first window answered
      this.recent = new Float32Array(this.windows.channels * this.windows.length); // the last `length` samples
      this.base = 0; // the first sample not yet answered
      this.total = []; // per sample from `base`: K sums each
      this.count = [];
    }

    async push(chunk, n) {
      const C = this.windows.channels; const W = this.windows.length;
      if (n === undefined && C === 1) n = chunk.length;
      const got = await this.windows.push(chunk, n); // checks the chunk
      const keep = Math.min(n, W);
      for (let c = 0; c < C; c += 1) {
        const row = this.recent.subarray(c * W, (c + 1) * W);
        row.copyWithin(0, keep);
        for (let k = 0; k < keep; k += 1) row[W - keep + k] = Number(chunk[c * n + n - keep + k]);
      }
      this.add(got.start, got.outputs[this.output], 0);
      return this.answer(this.windows.nextStart);
    }

    async finish() {
      const { seen, length: W, stride } = this.windows;
      if (seen >= W) {
        const covered = Math.floor((seen - W) / stride) * stride + W; // the end of the last regular window
        if (covered < seen) { // the tail window, answering only the samples after `covered`
          const out = (await this.bundle.predict(this.recent, [1, this.windows.channels, W]))[this.output];
          this.add([seen - W], out, Math.max(covered - (seen - W), 0));
        }
      }
      return this.answer(this.base + this.count.length);
    }

    // windows' probabilities {data, dims: [w, K, W]}, each from its step `from` on
    add(starts, probabilities, from) {
      if (!starts.length) return;
      const [, K, W] = probabilities.dims;
      this.K = K;
      starts.forEach((s, b) => {
        for (let j = from; j < W; j += 1) {
          const at = s + j - this.base;
          while (this.count.length <= at) { this.count.push(0); for (let k = 0; k < K; k += 1) this.total.push(0); }
          this.count[at] += 1;
          for (let k = 0; k < K; k += 1) this.total[at * K + k] += probabilities.data[(b * K + k) * W + j];
        }
      });
    }

    answer(until) {
      const K = this.K;
      const n = Math.max(0, Math.min(until - this.base, this.count.length));
      const sample = []; const values = [];
      for (let i = 0; i < n; i += 1) {
        if (!this.count[i]) continue;
        sample.push(this.base + i);
        for (let k = 0; k < K; k += 1) values.push(this.total[i * K + k] / this.count[i]);
      }
      const probabilities = Float32Array.from(values);
      const m = sample.length;
      let label;
      if (this.argmax) {
        const data = new Int32Array(m);
        for (let i = 0; i < m; i += 1) {
          for (let k = 1; k < K; k += 1) if (probabilities[i * K + k] > probabilities[i * K + data[i]]) data[i] = k;
        }
        label = { data, dims: [m] };
      } else {
        label = { data: Int32Array.from(probabilities, (p) => (p > 0.5 ? 1 : 0)), dims: [m, K] };
      }
      this.base += n;
      this.count.splice(0, n);
      this.total.splice(0, n * K);
      return { sample, probabilities: { data: probabilities, dims: [m, K] }, label };
    }
  }

  // The columns of a per-sample .csv that hold the signal, in the model's channel order: matched by header name
  // to manifest.window.channel_columns (the training file's), so a file with its columns in another order never
  // swaps channels; else every column but the recording, time and label ones, in file order. header: the first
  // row's cells when it is a header, else null.
  function signalColumns(manifest, header, width, where) {
    const w = manifest.window || {};
    const C = manifest.input.channels;
    const names = w.channel_columns;
    if (header && Array.isArray(names)) {
      const missing = names.filter((n) => !header.includes(n));
      if (missing.length) {
        throw new BundleError(`${where}: no column ${missing.map((n) => `'${n}'`).join(', ')}; the model reads the `
          + `channels ${names.map((n) => `'${n}'`).join(', ')} (matched by header name, in any order)`);
      }
      return names.map((n) => header.indexOf(n));
    }
    const skip = new Set([w.recording_column, w.time_column, ...((manifest.csv_labels || {}).columns || [])]);
    const cells = header || Array.from({ length: width }, (_, j) => String(j));
    const keep = cells.map((_, j) => j).filter((j) => !skip.has(cells[j]));
    if (keep.length !== C) throw new BundleError(`${where}: ${keep.length} signal column(s) but the model takes ${C}`);
    return keep;
  }

  // Outputs of several model calls as one {data, dims} (data of the first part's typed-array type).
  function concatOutputs(parts, rows) {
    if (!parts.length) return { data: new Float32Array(0), dims: [0] };
    const data = new parts[0].data.constructor(parts.reduce((k, p) => k + p.data.length, 0));
    let at = 0;
    for (const p of parts) { data.set(p.data, at); at += p.data.length; }
    return { data, dims: [rows, ...Array.from(parts[0].dims).slice(1)] };
  }

  // A case's recording ({shape: [C, T], data}) cut by one chunking: [chunk (C x n values, channel by channel), n].
  function* chunksOf(recording, chunking) {
    const [C, T] = recording.shape;
    let at = 0;
    for (const n of chunking) {
      const chunk = new Float32Array(C * n);
      for (let ch = 0; ch < C; ch += 1) chunk.set(recording.data.slice(ch * T + at, ch * T + at + n), ch * n);
      yield [chunk, n];
      at += n;
    }
  }

  // Rows {graph: 'stream', output, ...} for a stream case: the recording pushed in each chunking, every window's
  // start and outputs compared with the expected ones (eager PyTorch on the same windows).
  async function checkStream(bundle, c) {
    const { recording, chunkings, outputs: expected } = c.stream;
    const rows = [];
    for (const chunking of chunkings) {
      const stream = bundle.stream();
      const starts = []; const parts = {};
      for (const [chunk, n] of chunksOf(recording, chunking)) {
        const got = await stream.push(chunk, n);
        starts.push(...got.start);
        for (const [name, value] of Object.entries(got.outputs)) (parts[name] = parts[name] || []).push(value);
      }
      const same = JSON.stringify(starts) === JSON.stringify(expected.start.data);
      rows.push({ graph: 'stream', output: 'start', shape: [starts.length], max_abs: same ? 0 : Infinity, max_rel: 0, ok: same });
      for (const name of bundle.outputs) {
        const got = concatOutputs(parts[name].filter((p) => p.dims[0] > 0), starts.length);
        const { maxAbs, maxRel, ok } = compare(expected[name], got.dims[0] ? got : { data: [], dims: expected[name].shape },
          c.atol, c.rtol);
        rows.push({ graph: 'stream', output: name, shape: expected[name].shape, max_abs: maxAbs, max_rel: maxRel, ok });
      }
    }
    return rows;
  }

  // Rows {graph: 'steps', output, ...} for a per-step case: the recording pushed in each chunking and finished,
  // every answered sample, its stitched probabilities and label against the expected (eager PyTorch's windows
  // stitched by a plain loop).
  async function checkSteps(bundle, c) {
    const { recording, chunkings, outputs: expected } = c.steps;
    const rows = [];
    for (const chunking of chunkings) {
      const stream = bundle.stream();
      const answers = [];
      for (const [chunk, n] of chunksOf(recording, chunking)) answers.push(await stream.push(chunk, n));
      answers.push(await stream.finish());
      const sample = answers.flatMap((a) => a.sample);
      const same = JSON.stringify(sample) === JSON.stringify(expected.sample.data);
      rows.push({ graph: 'steps', output: 'sample', shape: [sample.length], max_abs: same ? 0 : Infinity, max_rel: 0, ok: same });
      for (const name of ['probabilities', 'label']) {
        const got = concatOutputs(answers.map((a) => a[name]).filter((p) => p.dims[0] > 0), sample.length);
        const { maxAbs, maxRel, ok } = compare(expected[name], got.dims[0] ? got : { data: [], dims: expected[name].shape },
          c.atol, c.rtol);
        rows.push({ graph: 'steps', output: name, shape: expected[name].shape, max_abs: maxAbs, max_rel: maxRel, ok });
      }
    }
    return rows;
  }

  // Rows {graph: 'forecast', ...} for a forecast case: the rollout of `steps` samples after `history` against the
  // expected (eager PyTorch's same loop).
  async function checkForecast(bundle, c) {
    const { history, steps, outputs: expected } = c.forecast;
    const got = await bundle.forecast(Float32Array.from(history.data), history.shape[1], steps);
    const { maxAbs, maxRel, ok } = compare(expected.forecast, got, c.atol, c.rtol);
    return [{ graph: 'forecast', output: 'forecast', shape: expected.forecast.shape, max_abs: maxAbs, max_rel: maxRel, ok }];
  }

  // Open a bundle through a host's io: manifest and schema, every file's size and sha256, then sessions.
  // precision: 'fp32' (model.onnx), 'int8' (model.int8.onnx) or 'auto' (int8 when the bundle has it).
  // publicKey: { pem, source } of the key the bundle must be signed with, or null (no signature check).
  async function openBundle(io, { options = {}, precision = 'fp32', publicKey = null } = {}) {
    if (!PRECISIONS.includes(precision)) {
      throw new BundleError(`precision '${precision}' is not valid; choose one of ${PRECISIONS.join(', ')}`);
    }
    let signed = null;
    if (publicKey) { // before anything else is read: the signed bytes are the ones used below
      signed = await checkSignature(io, publicKey);
      const read = io.readBytes;
      io = { ...io, readBytes: async (name) => (name in signed.files ? signed.files[name] : read(name)) };
    }
    const manifest = checkManifest(decode(await io.readBytes(MANIFEST_FILE)), decode(await io.readBytes(SCHEMA_FILE)),
      io.label(MANIFEST_FILE));
    if (signed && !io.listFiles) checkSignedList(io, signed.digests, [MANIFEST_FILE, ...Object.keys(manifest.files)]);
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
    const bundle = new Bundle(io.ort, manifest, model, lossSession, golden, used);
    bundle.signedBy = signed ? signed.fingerprint : null;
    return bundle;
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

  // The first way a golden.json case breaks the layout every host reads, in the words of runtime/golden.py and
  // the C++ kit, or null. required: the graphs the case must hold (a bundle's golden.json: model and loss).
  const SAFE = 2 ** 53;
  const isInteger = (v) => typeof v === 'number' && Number.isInteger(v) && Math.abs(v) <= SAFE;
  const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

  function tensorProblem(entry, where) {
    if (!isObject(entry)) return `'${where}' must be an object with shape, dtype and data`;
    const { shape, dtype, data } = entry;
    if (!Array.isArray(shape) || !shape.every((d) => isInteger(d) && d >= 0)) return `'${where}.shape' must be a list of integers >= 0`;
    if (dtype !== 'float32' && dtype !== 'int64') return `'${where}.dtype' must be "float32" or "int64"`;
    const size = shape.reduce((a, d) => a * d, 1);
    const kind = dtype === 'int64' ? 'integers' : 'numbers';
    if (!Array.isArray(data) || data.length !== size || !data.every(kind === 'integers' ? isInteger : isNumber)) {
      return `'${where}.data' must be a list of ${size} ${kind}`;
    }
    return null;
  }

  const shortName = (name) => (name.length <= 60 ? name : `${name.slice(0, 60)}...`);

  function goldenLayoutProblem(manifest, c, required = []) {
    if (!isObject(c)) return 'the case is not an object';
    for (const key of ['atol', 'rtol']) if (!isNumber(c[key]) || c[key] < 0) return `'${key}' must be a number >= 0`;
    const model = { inputs: [manifest.input.name], outputs: manifest.outputs };
    const names = { model, loss: { inputs: manifest.loss.inputs.map((t) => t.name), outputs: manifest.loss.outputs },
      model_int8: model };
    for (const [graph, parts] of Object.entries(names)) {
      if (!(graph in c)) {
        if (required.includes(graph)) return `'${graph}' is missing`;
        continue;
      }
      if (!isObject(c[graph])) return `'${graph}' must be an object with inputs and outputs`;
      for (const part of ['inputs', 'outputs']) {
        const tensors = c[graph][part]; const expected = parts[part];
        if (!isObject(tensors) || JSON.stringify(Object.keys(tensors).sort()) !== JSON.stringify([...expected].sort())) {
          return `'${graph}.${part}' must hold ${expected.map(shortName).join(', ')}`;
        }
        for (const name of expected) {
          const problem = tensorProblem(tensors[name], `${graph}.${part}.${name}`);
          if (problem) return problem;
        }
      }
    }
    return null;
  }

  // Rows {graph, output, shape, max_abs, max_rel, ok} for cases in the golden.json layout (a BundleError naming
  // the first bad field otherwise; `required`: the graphs each case must hold). An int8 model graph is checked
  // against its own golden outputs (model_int8) at the tolerance of manifest.json int8.
  async function checkCases(bundle, cases, { required = [] } = {}) {
    const rows = [];
    for (const given of Array.isArray(cases) ? cases : [cases]) {
      const problem = goldenLayoutProblem(bundle.manifest, given, required);
      if (problem) throw new BundleError(problem);
      const c = { ...given };
      const tolerance = {};
      if (bundle.precision === 'int8' && c.model) {
        if (!c.model_int8) throw new BundleError('the cases have no model_int8 outputs for the int8 graph; re-export the bundle');
        c.model = c.model_int8;
        tolerance.model = [bundle.manifest.int8.golden_atol, bundle.manifest.int8.golden_rtol];
      }
      if (c.stream) rows.push(...await checkStream(bundle, c));
      if (c.steps) rows.push(...await checkSteps(bundle, c));
      if (c.forecast) rows.push(...await checkForecast(bundle, c));
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

  return { Bundle, BundleError, Stream, StepStream, FORMAT_VERSIONS, PRECISIONS, SIGNATURE_FILE, checkCases, checkManifest, checkSignature, compare,
    derToP1363, goldenLayoutProblem, openBundle, readPublicKey, schemaError, signalColumns, tensor };
}));
