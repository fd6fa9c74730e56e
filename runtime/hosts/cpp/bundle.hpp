// Load a pipeline bundle in C++ with libtorch: the manifest checked against the bundle's
// manifest.schema.json, every file's size and sha256 (OpenSSL), then the TorchScript model and loss.
//
//   pipeline::Bundle bundle("artifacts/demo/bundle");
//   std::vector<torch::Tensor> outputs = bundle.predict(x);          // x: float32 (batch, channels, length)
//   auto [loss, per_sample_loss] = bundle.loss(outputs[0], target);  // target: int64 (batch) or float32 (batch, K)
#pragma once
#include <torch/script.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pipeline {

using Json = nlohmann::json;

struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Bundle {
 public:
  explicit Bundle(const std::string& dir);

  std::vector<torch::Tensor> predict(const torch::Tensor& x);
  std::pair<torch::Tensor, torch::Tensor> loss(const torch::Tensor& prediction, const torch::Tensor& target);

  const Json& manifest() const { return manifest_; }
  std::vector<std::string> output_names() const;

 private:
  std::string dir_;
  Json manifest_;
  torch::jit::Module model_;
  torch::jit::Module loss_;
};

// Tensors from the golden-data layout {"shape": [...], "dtype": "float32"|"int64", "data": [...]}.
torch::Tensor tensor_from_json(const Json& entry);

// A JSON file parsed with nlohmann/json; a BundleError names the file when it is not valid JSON.
Json read_json_file(const std::string& path);

}  // namespace pipeline
