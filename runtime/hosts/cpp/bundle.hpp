// Load a pipeline bundle in C++ with libtorch: the manifest checked against the bundle's
// manifest.schema.json, every file's size and sha256 (OpenSSL), then the model and loss graphs: the
// AOTInductor packages (model.aoti.pt2, loss.aoti.pt2; compiled code, no graph interpreter) when the
// bundle has them, else TorchScript (model.pt, loss.pt); or the engine you name.
//
//   pipeline::Bundle bundle("artifacts/demo/bundle");                 // or (dir, pipeline::Engine::TorchScript)
//   pipeline::Bundle trusted(dir, pipeline::Engine::Auto, "signing.pub.pem");  // model.sig checked first
//   std::vector<torch::Tensor> outputs = bundle.predict(x);          // x: float32 (batch, channels, length)
//   auto [loss, per_sample_loss] = bundle.loss(outputs[0], target);  // target: int64 (batch) or float32 (batch, K)
#pragma once
#include <torch/script.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "checked.hpp"

namespace pipeline {

// Which graphs run: Auto picks AOTInductor when the bundle has both packages, else TorchScript.
enum class Engine { Auto, TorchScript, AOTInductor };

// "auto", "torchscript" or "aoti" (the selfcheck's --engine); a BundleError for anything else.
Engine engine_from_name(const std::string& name);
std::string engine_name(Engine engine);

// One loaded graph file: tensors in, tensors out.
struct Graph {
  virtual ~Graph() = default;
  virtual std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) = 0;
};

class Bundle {
 public:
  // public_key: a PEM public key file (default $PIPELINE_PUBLIC_KEY); when set, the bundle's signature must
  // verify with it and cover exactly its files before any graph or AOTInductor package is opened.
  explicit Bundle(const std::string& dir, Engine engine = Engine::Auto, const std::string& public_key = "");

  std::vector<torch::Tensor> predict(const torch::Tensor& x);
  // series per model call: the input-size rule, at most the manifest's batch_bound (kernel models)
  int64_t batch_rows(int64_t channels, int64_t length) const;
  std::pair<torch::Tensor, torch::Tensor> loss(const torch::Tensor& prediction, const torch::Tensor& target);

  const Json& manifest() const { return manifest_; }
  std::vector<std::string> output_names() const;
  Engine engine() const { return engine_; }
  // the fingerprint of the key whose signature was verified, or "" (no key given)
  const std::string& signed_by() const { return signed_by_; }

 private:
  std::string dir_;
  Json manifest_;
  Engine engine_;
  std::string signed_by_;
  std::unique_ptr<Graph> model_;
  std::unique_ptr<Graph> loss_;
};

// Tensors from the golden-data layout {"shape": [...], "dtype": "float32"|"int64", "data": [...]}.
torch::Tensor tensor_from_json(const Json& entry);

}  // namespace pipeline
