// Signed bundles in C++: check model.sig (OpenSSF model-signing: a Sigstore bundle whose DSSE envelope signs
// an in-toto statement of every file's sha256) against a trusted EC public key with OpenSSL, before any graph
// or AOTInductor package is opened. Same checks and messages as runtime/signature.py and the JS kits.
#pragma once
#include <filesystem>
#include <map>
#include <string>

namespace pipeline {

// The sha256 of a file as lowercase hex (OpenSSL's libcrypto).
std::string sha256_file(const std::filesystem::path& path);

// A BundleError, in the words every kit uses, when `path` is a symbolic link, a FIFO, a socket or a device (or a
// folder, unless folder_ok); nothing when it is a regular file or absent. Never follows a link or opens the path.
void check_regular(const std::filesystem::path& path, bool folder_ok = true);

struct Signed {
  std::map<std::string, std::string> digests;  // every signed file: its sha256
  std::string fingerprint;                     // the key's: sha256 of its PEM SubjectPublicKeyInfo
};

// Verify dir/model.sig with the PEM public key (or certificate) at key_path, then that the signed files are
// exactly the bundle's files with those digests; a BundleError names the file or the reason.
Signed check_signature(const std::string& dir, const std::string& key_path);

// The key to check bundles with: `given`, else $PIPELINE_PUBLIC_KEY, else "" (no check).
std::string trusted_key(const std::string& given);

}  // namespace pipeline
