// Load a pipeline bundle in the browser with onnxruntime-web (wasm): the manifest checked against the
// bundle's manifest.schema.json, sha256 checks (Web Crypto), then the model and loss graphs. The checks and
// the graphs' I/O live in js/bundle-core.js, shared with the Node.js kit; the page loads it (and ort.min.js)
// with <script> tags before this module.
//
//   const bundle = await loadBundle('bundle/');
//   // a signed bundle: refused unless model.sig verifies with the PEM public key the page was given
//   const trusted = await loadBundle('bundle/', { publicKey: { pem: publicKeyText, source: 'signing.pub.pem' } });
//   const outputs = await bundle.predict(Float32Array.from(series), [n, channels, length]);

const core = globalThis.pipelineBundleCore;
export const { Bundle, BundleError, checkCases } = core;

function browserIo(base) {
  return {
    ort: globalThis.ort,
    label: (name) => name,
    readBytes: async (name) => {
      const response = await fetch(`${base}${name}`);
      if (!response.ok) throw new BundleError(`${base}${name}: HTTP ${response.status}; is the bundle served there?`);
      return new Uint8Array(await response.arrayBuffer());
    },
    sha256: async (bytes) => {
      const digest = await crypto.subtle.digest('SHA-256', bytes);
      return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    },
    sessionSource: (name, bytes) => bytes,
    listFiles: null, // a page cannot list a served folder: the signed list is held to manifest.json's instead
    verify: async (key, data, derSignature) => {
      const cryptoKey = await crypto.subtle.importKey('spki', key.spki, { name: 'ECDSA', namedCurve: key.curve },
        false, ['verify']);
      return crypto.subtle.verify({ name: 'ECDSA', hash: key.hash }, cryptoKey,
        core.derToP1363(derSignature, key.size), data);
    },
  };
}

// precision: 'fp32' (model.onnx), 'int8' (model.int8.onnx) or 'auto' (int8 when the bundle has it).
// publicKey: { pem, source }, the key the bundle must be signed with (checked before anything is loaded).
export async function loadBundle(base, { precision = 'fp32', publicKey = null } = {}) {
  return core.openBundle(browserIo(base), {
    options: { executionProviders: ['wasm'], graphOptimizationLevel: 'all' }, precision, publicKey });
}
