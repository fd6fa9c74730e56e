#include "checked.hpp"

#include <filesystem>
#include <fstream>

#include "schema.hpp"
#include "signature.hpp"

namespace pipeline {
namespace fs = std::filesystem;

namespace {
const int kFormatVersion = 1;
}

Json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BundleError(path + ": cannot be read");
  try {
    return Json::parse(in);
  } catch (const Json::parse_error& err) {
    throw BundleError(path + ": not valid JSON (" + err.what() + "); re-export the bundle");
  }
}

Json checked_manifest(const std::string& dir, const std::string& public_key, std::string& signed_by) {
  std::string key = trusted_key(public_key);
  signed_by.clear();
  if (!key.empty()) signed_by = check_signature(dir, key).fingerprint;  // before anything else is read
  fs::path manifest_path = fs::path(dir) / "manifest.json";
  check_regular(manifest_path, false);
  if (!fs::exists(manifest_path))
    throw BundleError(manifest_path.string() + ": not found; " + dir + " is not a bundle (pipeline export writes one)");
  Json manifest = read_json_file(manifest_path.string());
  if (!manifest.is_object() || manifest.value("format_version", Json()) != kFormatVersion)
    throw BundleError(manifest_path.string() + ": format_version is not supported (this host reads 1)");
  fs::path schema_path = fs::path(dir) / "manifest.schema.json";
  check_regular(schema_path, false);
  if (!fs::exists(schema_path))
    throw BundleError(schema_path.string() + ": not found; re-export the bundle with this version of pipeline");
  if (auto err = schema_error(read_json_file(schema_path.string()), manifest))
    throw BundleError(manifest_path.string() + ": " + *err +
                      "; the bundle is damaged or was not written by pipeline export, re-export it");
  for (const auto& [name, entry] : manifest["files"].items()) {
    fs::path file = fs::path(dir) / name;
    check_regular(file, false);  // a link, a folder or a FIFO where a file belongs
    if (!fs::exists(file)) throw BundleError(file.string() + ": listed in manifest.json but missing");
    auto size = fs::file_size(file);
    auto expected = entry["bytes"].get<uintmax_t>();
    if (size != expected)
      throw BundleError(file.string() + ": is " + std::to_string(size) + " bytes but manifest.json says " +
                        std::to_string(expected));
    if (sha256_file(file) != entry["sha256"].get<std::string>())
      throw BundleError(file.string() + ": sha256 differs from manifest.json (the file was altered)");
  }
  return manifest;
}

}  // namespace pipeline
