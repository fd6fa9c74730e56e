#include "bundle.hpp"

#include <openssl/evp.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>

#include "schema.hpp"

namespace pipeline {
namespace fs = std::filesystem;

namespace {

const int kFormatVersion = 1;

std::vector<torch::Tensor> as_tensors(const c10::IValue& value) {
  std::vector<torch::Tensor> out;
  if (value.isTuple()) {
    for (const auto& element : value.toTuple()->elements()) out.push_back(element.toTensor());
  } else {
    out.push_back(value.toTensor());
  }
  return out;
}

Json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BundleError(path.string() + ": cannot be read");
  try {
    return Json::parse(in);
  } catch (const Json::parse_error& err) {
    throw BundleError(path.string() + ": not valid JSON (" + err.what() + "); re-export the bundle");
  }
}

// The file's sha256 as lowercase hex, computed by OpenSSL's libcrypto.
std::string sha256_file(const fs::path& path) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw BundleError("sha256: OpenSSL failed");
  std::ifstream in(path, std::ios::binary);
  std::array<char, 1 << 16> block;
  while (in) {
    in.read(block.data(), block.size());
    if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), block.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

}  // namespace

Bundle::Bundle(const std::string& dir) : dir_(dir) {
  fs::path manifest_path = fs::path(dir) / "manifest.json";
  if (!fs::exists(manifest_path))
    throw BundleError(manifest_path.string() + ": not found; " + dir + " is not a bundle (pipeline export writes one)");
  manifest_ = read_json(manifest_path);
  if (!manifest_.is_object() || manifest_.value("format_version", Json()) != kFormatVersion)
    throw BundleError(manifest_path.string() + ": format_version is not supported (this host reads 1)");
  fs::path schema_path = fs::path(dir) / "manifest.schema.json";
  if (!fs::exists(schema_path))
    throw BundleError(schema_path.string() + ": not found; re-export the bundle with this version of pipeline");
  if (auto err = schema_error(read_json(schema_path), manifest_))
    throw BundleError(manifest_path.string() + ": " + *err +
                      "; the bundle is damaged or was not written by pipeline export, re-export it");
  for (const auto& [name, entry] : manifest_["files"].items()) {
    fs::path file = fs::path(dir) / name;
    if (!fs::exists(file)) throw BundleError(file.string() + ": listed in manifest.json but missing");
    auto size = fs::file_size(file);
    auto expected = entry["bytes"].get<uintmax_t>();
    if (size != expected)
      throw BundleError(file.string() + ": is " + std::to_string(size) + " bytes but manifest.json says " +
                        std::to_string(expected));
    if (sha256_file(file) != entry["sha256"].get<std::string>())
      throw BundleError(file.string() + ": sha256 differs from manifest.json (the file was altered)");
  }
  for (const char* name : {"model.pt", "loss.pt"})
    if (!manifest_["files"].contains(name))
      throw BundleError(dir + ": has no " + name + "; re-export with --format torchscript or all");
  model_ = torch::jit::load((fs::path(dir) / "model.pt").string());
  model_.eval();
  loss_ = torch::jit::load((fs::path(dir) / "loss.pt").string());
  loss_.eval();
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
  return as_tensors(model_.forward({x.to(torch::kFloat32).contiguous()}));
}

std::pair<torch::Tensor, torch::Tensor> Bundle::loss(const torch::Tensor& prediction, const torch::Tensor& target) {
  torch::InferenceMode guard;
  auto out = as_tensors(loss_.forward({prediction, target}));
  return {out.at(0), out.at(1)};
}

torch::Tensor tensor_from_json(const Json& entry) {
  auto shape = entry["shape"].get<std::vector<int64_t>>();
  if (entry["dtype"].get<std::string>() == "int64")
    return torch::tensor(entry["data"].get<std::vector<int64_t>>(), torch::kInt64).reshape(shape);
  return torch::tensor(entry["data"].get<std::vector<float>>(), torch::kFloat32).reshape(shape);
}

Json read_json_file(const std::string& path) { return read_json(path); }

}  // namespace pipeline
