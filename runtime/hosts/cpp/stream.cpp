#include "stream.hpp"

#include <algorithm>
#include <string>

namespace pipeline {

namespace {
const int64_t kStreamBatch = 256;  // windows per model call, so a chunk of any length needs bounded memory

int64_t window_field(const Json& manifest, const char* key, int64_t fallback) {
  if (manifest.contains("window") && manifest["window"].contains(key)) return manifest["window"][key].get<int64_t>();
  return fallback;
}
}  // namespace

Stream::Stream(Bundle& bundle, int64_t length, int64_t stride) : bundle_(bundle) {
  // 0 (the default) takes the bundle's own; a negative value is no default but a mistake
  for (const auto& [name, value] : {std::make_pair("length", length), std::make_pair("stride", stride)})
    if (value < 0)
      throw BundleError(std::string("stream ") + name + ": " + std::to_string(value) + " must be a whole number of " +
                        "samples >= 1 (or 0 for the bundle's own)");
  const Json& m = bundle.manifest();
  const Json& spec = m["input"]["length"];
  int64_t model_length = spec.contains("fixed") ? spec["fixed"].get<int64_t>() : spec["trained"].get<int64_t>();
  channels_ = m["input"]["channels"].get<int64_t>();
  length_ = length > 0 ? length : window_field(m, "length", model_length);
  stride_ = stride > 0 ? stride : window_field(m, "stride", length_);
  held_ = torch::zeros({channels_, std::max<int64_t>(length_ - 1, 0)}, torch::kFloat32);
}

StreamOutput Stream::push(const torch::Tensor& given) {
  if (given.dim() != 2 || given.size(0) != channels_) {
    throw BundleError("chunk: pass float32 (" + std::to_string(channels_) + ", n) samples per push");
  }
  torch::Tensor chunk = given.to(torch::kFloat32).contiguous();
  if (!torch::isfinite(chunk).all().item<bool>()) {
    throw BundleError("chunk: holds NaN or Inf; fill gaps before pushing (nothing of this chunk was used)");
  }
  const int64_t n = chunk.size(1);
  const int64_t held = std::min(seen_, length_ - 1);
  torch::Tensor joined = torch::cat({held_.narrow(1, held_.size(1) - held, held), chunk}, 1);
  const int64_t first = seen_ - held;  // the sample number of joined[:, 0]
  StreamOutput out;
  for (int64_t s = next_start_; s + length_ <= seen_ + n; s += stride_) out.start.push_back(s);
  if (!out.start.empty()) next_start_ = out.start.back() + stride_;
  std::vector<std::vector<torch::Tensor>> parts(bundle_.output_names().size());
  for (size_t i = 0; i < out.start.size(); i += kStreamBatch) {
    std::vector<torch::Tensor> windows;
    for (size_t j = i; j < std::min(out.start.size(), i + kStreamBatch); ++j)
      windows.push_back(joined.narrow(1, out.start[j] - first, length_));
    auto outputs = bundle_.predict(torch::stack(windows));
    for (size_t k = 0; k < parts.size(); ++k) parts[k].push_back(outputs.at(k));
  }
  for (auto& p : parts) out.outputs.push_back(p.empty() ? torch::Tensor() : torch::cat(p));
  seen_ += n;
  const int64_t keep = std::min(seen_, length_ - 1);
  if (keep > 0) held_.narrow(1, held_.size(1) - keep, keep).copy_(joined.narrow(1, joined.size(1) - keep, keep));
  return out;
}

}  // namespace pipeline
