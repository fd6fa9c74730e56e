// What every C++ kit checks before it opens a graph, without libtorch (the .pte kit, runtime/hosts/pte, links
// no libtorch): the signature when a key is given, manifest.json against the bundle's manifest.schema.json,
// and every listed file's size and sha256.
#pragma once
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace pipeline {

using Json = nlohmann::json;

struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A JSON file parsed with nlohmann/json; a BundleError names the file when it is not valid JSON.
Json read_json_file(const std::string& path);

// The checked manifest of the bundle folder `dir`; `signed_by` gets the verifying key's fingerprint, or "".
Json checked_manifest(const std::string& dir, const std::string& public_key, std::string& signed_by);

}  // namespace pipeline
