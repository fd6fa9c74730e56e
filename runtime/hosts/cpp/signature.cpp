#include "signature.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <vector>

#include "checked.hpp"

namespace pipeline {
namespace fs = std::filesystem;

namespace {

const char* kSignatureFile = "model.sig";
const char* kMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json";
const char* kPayloadType = "application/vnd.in-toto+json";
const char* kStatementType = "https://in-toto.io/Statement/v1";
const char* kPredicateType = "https://model_signing/signature/v1.0";

using Bytes = std::vector<unsigned char>;
using Key = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

std::string hex(const unsigned char* data, size_t length) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < length; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 15];
  }
  return out;
}

std::string sha256_bytes(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  return hex(digest, length);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Strict base64 (standard alphabet, optional '=' padding); throws on anything else.
Bytes base64_decode(const std::string& text) {
  std::string clean = text;
  while (!clean.empty() && clean.back() == '=') clean.pop_back();
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (clean.size() % 4 == 1) throw std::runtime_error("invalid base64");
  Bytes out;
  int bits = 0;
  unsigned value = 0;
  for (char ch : clean) {
    auto k = alphabet.find(ch);
    if (k == std::string::npos) throw std::runtime_error("invalid base64");
    value = (value << 6) | static_cast<unsigned>(k);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<unsigned char>((value >> bits) & 0xff));
    }
  }
  return out;
}

struct TrustedKey {
  Key pkey{nullptr, EVP_PKEY_free};
  const EVP_MD* md = nullptr;
  std::string fingerprint, source;
};

TrustedKey read_key(const std::string& path) {
  TrustedKey key;
  key.source = path;
  if (!fs::is_regular_file(path))
    throw BundleError(path + ": public key not found; pass the PEM public key the bundle was signed for");
  std::string pem = read_text(path);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  key.pkey.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key.pkey) {  // a certificate: its key
    std::unique_ptr<BIO, decltype(&BIO_free)> again(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                                    BIO_free);
    std::unique_ptr<X509, decltype(&X509_free)> cert(PEM_read_bio_X509(again.get(), nullptr, nullptr, nullptr),
                                                      X509_free);
    if (cert) key.pkey.reset(X509_get_pubkey(cert.get()));
  }
  if (!key.pkey)
    throw BundleError(path + ": holds no PEM public key; export one with openssl ec -in KEY.pem -pubout -out PUBLIC.pem");
  int type = EVP_PKEY_base_id(key.pkey.get());
  if (type != EVP_PKEY_EC) {
    std::string name = type == EVP_PKEY_RSA ? "RSA" : type == EVP_PKEY_ED25519 ? "Ed25519"
                       : type == EVP_PKEY_ED448 ? "Ed448" : type == EVP_PKEY_DSA ? "DSA" : std::to_string(type);
    throw BundleError(path + ": unsupported key type (" + name + "); bundles are signed and checked with EC keys " +
                      "(P-256, P-384 or P-521), see docs/signing.md");
  }
  char group[64] = {0};
  size_t group_length = 0;
  EVP_PKEY_get_group_name(key.pkey.get(), group, sizeof(group), &group_length);
  std::string curve(group);
  if (curve == "prime256v1") key.md = EVP_sha256();
  else if (curve == "secp384r1") key.md = EVP_sha384();
  else if (curve == "secp521r1") key.md = EVP_sha512();
  else throw BundleError(path + ": unsupported EC curve " + curve + "; use P-256, P-384 or P-521");
  std::unique_ptr<BIO, decltype(&BIO_free)> out(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PUBKEY(out.get(), key.pkey.get());
  char* data = nullptr;
  long length = BIO_get_mem_data(out.get(), &data);
  key.fingerprint = sha256_bytes(std::string(data, static_cast<size_t>(length)));
  return key;
}

std::vector<std::string> bundle_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    check_regular(entry.path());  // a link (to a file or a folder), a FIFO or a device: refused
    if (entry.is_directory()) continue;
    std::string name = fs::relative(entry.path(), dir).generic_string();
    if (name != kSignatureFile) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void check_regular(const fs::path& path, bool folder_ok) {
  std::error_code ec;
  fs::file_status status = fs::symlink_status(path, ec);  // never follows a link, never opens the path
  if (ec || !fs::exists(status)) return;
  std::string kind;
  if (fs::is_symlink(status)) kind = "a symbolic link";
  else if (fs::is_directory(status)) kind = folder_ok ? "" : "a folder";
  else if (!fs::is_regular_file(status)) kind = "not a regular file (a FIFO, socket or device)";
  if (!kind.empty())
    throw BundleError(path.string() + ": is " + kind + "; a bundle holds regular files only, so it is refused (copy " +
                      "the file itself into the bundle, or re-export it)");
}

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
  return hex(digest, length);
}

std::string trusted_key(const std::string& given) {
  if (!given.empty()) return given;
  const char* env = std::getenv("PIPELINE_PUBLIC_KEY");
  return env ? std::string(env) : std::string();
}

Signed check_signature(const std::string& dir, const std::string& key_path) {
  TrustedKey key = read_key(key_path);
  std::string label = (fs::path(dir) / kSignatureFile).string();
  check_regular(fs::path(dir) / kSignatureFile);
  if (!fs::is_regular_file(fs::path(dir) / kSignatureFile))
    throw BundleError(label + ": not found; the bundle is not signed (sign it with pipeline sign BUNDLE --key " +
                      "KEY.pem), and a public key was given, so it is refused");
  auto bad = [&](const std::string& why) {
    return BundleError(label + ": not a model-signing signature (" + why + "); sign the bundle again (pipeline sign)");
  };
  Json bundle;
  try {
    bundle = Json::parse(read_text(fs::path(dir) / kSignatureFile));
  } catch (const Json::parse_error& err) {
    throw bad(std::string("not valid JSON: ") + err.what());
  }
  if (!bundle.is_object() || bundle.value("mediaType", Json()) != kMediaType)
    throw bad(std::string("mediaType is not ") + kMediaType);
  const Json envelope = bundle.value("dsseEnvelope", Json());
  if (!envelope.is_object() || envelope.value("payloadType", Json()) != kPayloadType)
    throw bad(std::string("no DSSE envelope of ") + kPayloadType);
  const Json signatures = envelope.value("signatures", Json());
  if (!signatures.is_array() || signatures.size() != 1 || !signatures[0].is_object())
    throw bad("the envelope must hold exactly one signature");
  Bytes payload, signature;
  Json statement;
  try {
    payload = base64_decode(envelope.value("payload", std::string()));
    signature = base64_decode(signatures[0].value("sig", std::string()));
    statement = Json::parse(payload.begin(), payload.end());
  } catch (const std::exception& err) {
    throw bad(std::string("unreadable payload or signature: ") + err.what());
  }
  if (!statement.is_object() || statement.value("_type", Json()) != kStatementType ||
      statement.value("predicateType", Json()) != kPredicateType)
    throw bad(std::string("the payload is not an in-toto statement of ") + kPredicateType);
  // verificationMaterial.publicKey.hint: each level absent (or null) or of its JSON type
  std::string hint;
  const Json material = bundle.value("verificationMaterial", Json());
  if (!material.is_null()) {
    if (!material.is_object()) throw bad("verificationMaterial is not an object");
    const Json public_key = material.value("publicKey", Json());
    if (!public_key.is_null()) {
      if (!public_key.is_object()) throw bad("verificationMaterial.publicKey is not an object");
      const Json given = public_key.value("hint", Json());
      if (!given.is_null() && !given.is_string()) throw bad("verificationMaterial.publicKey.hint is not a string");
      if (given.is_string()) hint = given.get<std::string>();
    }
  }
  if (!hint.empty() && hint != key.fingerprint)
    throw BundleError(label + ": signed by another key (" + hint.substr(0, 16) + "), not by " + key.source + " (" +
                      key.fingerprint.substr(0, 16) + "); pass the public key the bundle was signed with, or sign " +
                      "it again");
  std::string type = kPayloadType;
  std::string message = "DSSEv1 " + std::to_string(type.size()) + " " + type + " " + std::to_string(payload.size()) +
                        " " + std::string(payload.begin(), payload.end());
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, key.md, nullptr, key.pkey.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                             reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  if (!ok)
    throw BundleError(label + ": the signature does not verify with " + key.source + " (key " +
                      key.fingerprint.substr(0, 16) + "); the bundle was signed with another key or its signature " +
                      "was altered");
  const Json resources = statement.value("predicate", Json::object()).value("resources", Json());
  if (!resources.is_array())
    throw BundleError(label + ": the signed statement lists no files; sign the bundle again (pipeline sign)");
  Signed signed_files;
  signed_files.fingerprint = key.fingerprint;
  for (const auto& item : resources) {
    if (!item.is_object() || item.value("algorithm", Json()) != "sha256" || !item.value("name", Json()).is_string() ||
        !item.value("digest", Json()).is_string())
      throw BundleError(label + ": a signed file entry is not {name, sha256 digest}; sign the bundle again");
    signed_files.digests[item["name"].get<std::string>()] = item["digest"].get<std::string>();
  }
  std::vector<std::string> present = bundle_files(dir);
  for (const auto& name : present)
    if (!signed_files.digests.count(name))
      throw BundleError((fs::path(dir) / name).string() + ": not covered by the signature (added or renamed after " +
                        "signing)");
  std::set<std::string> here(present.begin(), present.end());
  for (const auto& [name, digest] : signed_files.digests)
    if (!here.count(name))
      throw BundleError((fs::path(dir) / name).string() + ": signed but missing (removed or renamed after signing)");
  for (const auto& [name, digest] : signed_files.digests)
    if (sha256_file(fs::path(dir) / name) != digest)
      throw BundleError((fs::path(dir) / name).string() + ": sha256 differs from the signed digest (the file was " +
                        "changed after signing)");
  return signed_files;
}

}  // namespace pipeline
