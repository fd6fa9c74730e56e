'use strict';
// Load a pipeline bundle in Node.js: check its manifest (against the bundle's manifest.schema.json) and
// sha256 sums, then run the model and loss graphs with onnxruntime-node. No Python or torch involved.
// The checks and the graphs' I/O live in ../js/bundle-core.js, shared with the browser page.
//
//   const { loadBundle } = require('./bundle');
//   const bundle = await loadBundle('artifacts/demo/bundle');  // { precision: 'int8' }: model.int8.onnx
//   // a signed bundle, refused unless model.sig verifies with the key and covers exactly its files:
//   const trusted = await loadBundle('artifacts/demo/bundle', { publicKey: 'signing.pub.pem' });
//   const outputs = await bundle.predict(Float32Array.from(series), [n, channels, length]);
//   const { loss, perSampleLoss } = await bundle.loss(outputs[bundle.outputs[0]], targets);

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');
const core = require('../js/bundle-core');

const { BundleError } = core;

// What a bundle entry is when it is not a regular file, in the words of runtime/errors.py, or null (a regular
// file, or nothing there). lstat: a link is never followed and a FIFO never opened (reading one would block).
function notRegular(file) {
  let stat;
  try { stat = fs.lstatSync(file); } catch (err) { return null; }
  if (stat.isSymbolicLink()) return 'a symbolic link';
  if (stat.isDirectory()) return 'a folder';
  return stat.isFile() ? null : 'not a regular file (a FIFO, socket or device)';
}

function checkRegular(file) {
  const kind = notRegular(file);
  if (kind) {
    throw new BundleError(`${file}: is ${kind}; a bundle holds regular files only, so it is refused (copy the file `
      + 'itself into the bundle, or re-export it)');
  }
}

function nodeIo(dir) {
  return {
    ort,
    label: (name) => path.join(dir, name),
    readBytes: async (name) => {
      const file = path.join(dir, name);
      checkRegular(file);
      if (!fs.existsSync(file)) {
        const what = name === 'manifest.json' ? `${dir} is not a bundle (pipeline export writes one)`
          : 'listed in manifest.json but missing (or re-export the bundle)';
        throw new BundleError(`${file}: not found; ${what}`);
      }
      return new Uint8Array(fs.readFileSync(file));
    },
    sha256: async (bytes) => crypto.createHash('sha256').update(bytes).digest('hex'),
    sessionSource: (name) => path.join(dir, name),
    // every file of the bundle but its signature, '/'-separated below the folder
    listFiles: async () => {
      const out = [];
      const walk = (rel) => {
        for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
          const name = rel ? `${rel}/${entry.name}` : entry.name;
          if (entry.isDirectory()) walk(name);
          else if (!entry.isFile()) checkRegular(path.join(dir, name));  // a link, FIFO or device: refused
          else if (name !== core.SIGNATURE_FILE) out.push(name);
        }
      };
      walk('');
      return out;
    },
    verify: async (key, data, derSignature) => crypto.verify(key.hash.replace('-', '').toLowerCase(), data,
      { key: Buffer.from(key.spki), format: 'der', type: 'spki' }, Buffer.from(derSignature)),
  };
}

// The trusted key: the path given, else $PIPELINE_PUBLIC_KEY, else none (no signature check).
function trustedKey(publicKey) {
  const file = publicKey || process.env.PIPELINE_PUBLIC_KEY;
  if (!file) return null;
  if (!fs.existsSync(file)) {
    throw new BundleError(`${file}: public key not found; pass the PEM public key the bundle was signed for`);
  }
  return { pem: fs.readFileSync(file, 'utf8'), source: file };
}

// precision: 'fp32' (model.onnx, the default), 'int8' (model.int8.onnx) or 'auto' (int8 when the bundle has it).
// publicKey: a PEM public key file (default $PIPELINE_PUBLIC_KEY): the bundle's signature is checked first.
async function loadBundle(dir, { threads, precision = 'fp32', publicKey } = {}) {
  const options = { graphOptimizationLevel: 'all', executionProviders: ['cpu'] };
  if (threads) options.intraOpNumThreads = threads;
  return core.openBundle(nodeIo(dir), { options, precision, publicKey: trustedKey(publicKey) });
}

module.exports = { Bundle: core.Bundle, BundleError, checkCases: core.checkCases, loadBundle, signalColumns: core.signalColumns };
