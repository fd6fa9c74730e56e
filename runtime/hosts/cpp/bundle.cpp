#include "bundle.hpp"

#include <filesystem>

#include "sha256.hpp"

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

}  // namespace

Bundle::Bundle(const std::string& dir) : dir_(dir) {
  fs::path manifest_path = fs::path(dir) / "manifest.json";
  if (!fs::exists(manifest_path))
    throw BundleError(manifest_path.string() + ": not found; " + dir + " is not a bundle (pipeline export writes one)");
  manifest_ = Json::read_file(manifest_path.string());
  if (manifest_["format_version"].number != 1)
    throw BundleError(manifest_path.string() + ": format_version is not supported (this host reads 1)");
  for (const auto& [name, entry] : manifest_["files"].object) {
    fs::path file = fs::path(dir) / name;
    if (!fs::exists(file)) throw BundleError(file.string() + ": listed in manifest.json but missing");
    auto size = fs::file_size(file);
    if (size != static_cast<uintmax_t>(entry["bytes"].number))
      throw BundleError(file.string() + ": is " + std::to_string(size) + " bytes but manifest.json says " +
                        std::to_string(static_cast<uintmax_t>(entry["bytes"].number)));
    if (sha256_file(file.string()) != entry["sha256"].string)
      throw BundleError(file.string() + ": sha256 differs from manifest.json (the file was altered)");
  }
  for (const char* name : {"model.pt", "loss.pt"})
    if (!manifest_["files"].has(name))
      throw BundleError(dir + ": has no " + name + "; re-export with --format torchscript or all");
  model_ = torch::jit::load((fs::path(dir) / "model.pt").string());
  model_.eval();
  loss_ = torch::jit::load((fs::path(dir) / "loss.pt").string());
  loss_.eval();
}

std::vector<std::string> Bundle::output_names() const {
  std::vector<std::string> names;
  for (const auto& name : manifest_["outputs"].array) names.push_back(name.string);
  return names;
}

std::vector<torch::Tensor> Bundle::predict(const torch::Tensor& x) {
  const Json& input = manifest_["input"];
  if (x.dim() != 3 || x.size(1) != static_cast<int64_t>(input["channels"].number))
    throw BundleError("x: must be (batch, " + std::to_string(static_cast<int>(input["channels"].number)) +
                      ", length)");
  if (input["length"].has("fixed") && x.size(2) != static_cast<int64_t>(input["length"]["fixed"].number))
    throw BundleError("x: this model takes exactly length " +
                      std::to_string(static_cast<int>(input["length"]["fixed"].number)));
  torch::InferenceMode guard;
  return as_tensors(model_.forward({x.to(torch::kFloat32).contiguous()}));
}

std::pair<torch::Tensor, torch::Tensor> Bundle::loss(const torch::Tensor& prediction, const torch::Tensor& target) {
  torch::InferenceMode guard;
  auto out = as_tensors(loss_.forward({prediction, target}));
  return {out.at(0), out.at(1)};
}

torch::Tensor tensor_from_json(const Json& entry) {
  std::vector<int64_t> shape;
  for (const auto& d : entry["shape"].array) shape.push_back(static_cast<int64_t>(d.number));
  const auto& data = entry["data"].array;
  if (entry["dtype"].string == "int64") {
    std::vector<int64_t> values;
    for (const auto& v : data) values.push_back(static_cast<int64_t>(v.number));
    return torch::tensor(values, torch::kInt64).reshape(shape);
  }
  std::vector<float> values;
  for (const auto& v : data) values.push_back(static_cast<float>(v.number));
  return torch::tensor(values, torch::kFloat32).reshape(shape);
}

}  // namespace pipeline
