#include "bundle.hpp"

#include <ATen/Context.h>
#include <openssl/evp.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <memory>

#include "schema.hpp"
#include "signature.hpp"

namespace pipeline {
namespace fs = std::filesystem;

namespace {

std::vector<torch::Tensor> as_tensors(const c10::IValue& value) {
  std::vector<torch::Tensor> out;
  if (value.isTuple()) {
    for (const auto& element : value.toTuple()->elements()) out.push_back(element.toTensor());
  } else {
    out.push_back(value.toTensor());
  }
  return out;
}

class TorchScriptGraph : public Graph {
 public:
  explicit TorchScriptGraph(const fs::path& path) : module_(torch::jit::load(path.string())) { module_.eval(); }
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) override {
    return as_tensors(module_.forward(std::vector<c10::IValue>(inputs.begin(), inputs.end())));
  }

 private:
  torch::jit::Module module_;
};

// An AOTInductor package: compiled for one device (inputs are moved there, outputs back to the CPU).
class AotiGraph : public Graph {
 public:
  AotiGraph(const fs::path& path, const std::string& device) : loader_(path.string()), device_(device) {
    if (device_.is_cuda()) {  // export verified the package in full float32 (no TF32), as eager computes on the CPU
      at::globalContext().setAllowTF32CuDNN(false);
      at::globalContext().setFloat32MatmulPrecision("highest");
    }
  }
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) override {
    std::vector<torch::Tensor> moved;
    for (const auto& t : inputs) moved.push_back(t.to(device_).contiguous());
    auto out = loader_.run(moved);
    for (auto& t : out) t = t.to(torch::kCPU);
    return out;
  }

 private:
  torch::inductor::AOTIModelPackageLoader loader_;
  torch::Device device_;
};

// "2.13.0+cpu" -> "2.13": AOTInductor packages load only in the libtorch minor version that built them.
std::string minor_version(const std::string& version) {
  auto first = version.find('.');
  auto second = version.find('.', first + 1);
  return version.substr(0, second == std::string::npos ? version.find_first_of("+", first) : second);
}

}  // namespace

Engine engine_from_name(const std::string& name) {
  if (name == "auto") return Engine::Auto;
  if (name == "torchscript") return Engine::TorchScript;
  if (name == "aoti") return Engine::AOTInductor;
  throw BundleError("--engine " + name + ": choose auto, torchscript or aoti");
}

std::string engine_name(Engine engine) {
  return engine == Engine::AOTInductor ? "aoti" : engine == Engine::TorchScript ? "torchscript" : "auto";
}

Bundle::Bundle(const std::string& dir, Engine engine, const std::string& public_key) : dir_(dir), engine_(engine) {
  manifest_ = checked_manifest(dir, public_key, signed_by_);
  const Json& files = manifest_["files"];
  if (engine_ == Engine::Auto)
    engine_ = files.contains("model.aoti.pt2") && files.contains("loss.aoti.pt2") ? Engine::AOTInductor
                                                                                    : Engine::TorchScript;
  if (engine_ == Engine::TorchScript) {
    for (const char* name : {"model.pt", "loss.pt"})
      if (!files.contains(name))
        throw BundleError(dir + ": has no " + name + "; re-export with --format torchscript (or all, or a list " +
                          "with torchscript), or run its AOTInductor packages (--engine aoti)");
    model_ = std::make_unique<TorchScriptGraph>(fs::path(dir) / "model.pt");
    loss_ = std::make_unique<TorchScriptGraph>(fs::path(dir) / "loss.pt");
    return;
  }
  for (const char* name : {"model.aoti.pt2", "loss.aoti.pt2"})
    if (!files.contains(name))
      throw BundleError(dir + ": has no " + name + "; re-export with --format aoti (or a list with aoti), or run " +
                        "its TorchScript graphs (--engine torchscript)");
  const Json& target = manifest_["torch_export"]["aoti"];
  std::string built = target["torch"].get<std::string>(), here = TORCH_VERSION;
  if (minor_version(built) != minor_version(here))
    throw BundleError(dir + ": its AOTInductor packages were compiled for torch " + built + " but this program " +
                      "links libtorch " + here + "; re-export with --format aoti where that libtorch's torch is " +
                      "installed, or run the TorchScript graphs (--engine torchscript)");
  std::string device = target["device"].get<std::string>();
  if (device == "cuda" && !torch::cuda::is_available())
    throw BundleError(dir + ": its AOTInductor packages were compiled for CUDA and CUDA is not available here");
  model_ = std::make_unique<AotiGraph>(fs::path(dir) / "model.aoti.pt2", device);
  loss_ = std::make_unique<AotiGraph>(fs::path(dir) / "loss.aoti.pt2", device);
}

std::vector<std::string> Bundle::output_names() const { return manifest_["outputs"].get<std::vector<std::string>>(); }

std::vector<torch::Tensor> Bundle::predict(const torch::Tensor& x) {
  const Json& input = manifest_["input"];
  auto channels = input["channels"].get<int64_t>();
  if (x.dim() != 3 || x.size(1) != channels)
    throw BundleError("x: must be (batch, " + std::to_string(channels) + ", length)");
  const Json& length = input["length"];
  if (length.contains("fixed") && x.size(2) != length["fixed"].get<int64_t>())
    throw BundleError("x: this model takes exactly length " + length["fixed"].dump());
  torch::InferenceMode guard;
  torch::Tensor series = x.to(torch::kFloat32).contiguous();
  int64_t rows = batch_rows(channels, x.size(2));
  if (x.size(0) <= rows) return model_->run({series});
  // larger inputs run in calls of `rows` series (the Python runtime's rule), each output joined in order
  std::vector<std::vector<torch::Tensor>> parts;
  for (int64_t start = 0; start < x.size(0); start += rows)
    parts.push_back(model_->run({series.narrow(0, start, std::min(rows, x.size(0) - start)).contiguous()}));
  std::vector<torch::Tensor> outputs;
  for (size_t i = 0; i < parts[0].size(); ++i) {
    std::vector<torch::Tensor> pieces;
    for (const auto& part : parts) pieces.push_back(part[i]);
    outputs.push_back(torch::cat(pieces, 0));
  }
  return outputs;
}

int64_t Bundle::batch_rows(int64_t channels, int64_t length) const {
  // runtime/inputs.py batch_rows: as many series as fit 8 MiB of float32 input, at most 256, and at most the
  // manifest's batch_bound.series_per_call (kernel models, whose comparisons outgrow their input)
  const int64_t batch_bytes = 8 * 1024 * 1024, max_batch = 256;
  int64_t rows = std::min(max_batch, std::max<int64_t>(1, batch_bytes / std::max<int64_t>(4 * channels * length, 1)));
  if (manifest_.contains("batch_bound"))
    rows = std::min(rows, manifest_["batch_bound"]["series_per_call"].get<int64_t>());
  return rows;
}

std::pair<torch::Tensor, torch::Tensor> Bundle::loss(const torch::Tensor& prediction, const torch::Tensor& target) {
  torch::InferenceMode guard;
  auto out = loss_->run({prediction.contiguous(), target.contiguous()});
  return {out.at(0), out.at(1)};
}

torch::Tensor tensor_from_json(const Json& entry) {
  auto shape = entry["shape"].get<std::vector<int64_t>>();
  if (entry["dtype"].get<std::string>() == "int64")
    return torch::tensor(entry["data"].get<std::vector<int64_t>>(), torch::kInt64).reshape(shape);
  return torch::tensor(entry["data"].get<std::vector<float>>(), torch::kFloat32).reshape(shape);
}


}  // namespace pipeline
