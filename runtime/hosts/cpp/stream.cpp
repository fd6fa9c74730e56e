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

StepStream::StepStream(Bundle& bundle, int64_t length, int64_t stride)
    : windows_(bundle, length, stride), bundle_(bundle) {
  const Json& m = bundle.manifest();
  output_ = 1;  // logits first, then the probabilities (binary: 'probability')
  argmax_ = m["task"].get<std::string>() == "multiclass";
  recent_ = torch::zeros({windows_.channels_, windows_.length_}, torch::kFloat32);
  total_ = torch::zeros({0, 0}, torch::kFloat64);
  count_ = torch::zeros({0}, torch::kInt64);
}

StepOutput StepStream::push(const torch::Tensor& given) {
  StreamOutput out = windows_.push(given);  // checks the chunk
  torch::Tensor chunk = given.to(torch::kFloat32);
  const int64_t n = chunk.size(1), W = windows_.length_, keep = std::min(n, W);
  recent_ = torch::cat({recent_.narrow(1, keep, W - keep), chunk.narrow(1, n - keep, keep)}, 1);
  if (!out.start.empty()) add(out.start, out.outputs.at(output_), 0);
  return answer(windows_.next_start_);
}

StepOutput StepStream::finish() {
  const int64_t seen = windows_.seen_, W = windows_.length_, stride = windows_.stride_;
  if (seen >= W) {
    const int64_t covered = (seen - W) / stride * stride + W;  // the end of the last regular window
    if (covered < seen) {  // the tail window, answering only the samples after `covered`
      torch::Tensor p = bundle_.predict(recent_.unsqueeze(0)).at(output_);
      add({seen - W}, p, std::max<int64_t>(covered - (seen - W), 0));
    }
  }
  return answer(base_ + count_.size(0));
}

void StepStream::add(const std::vector<int64_t>& starts, const torch::Tensor& probabilities, int64_t from) {
  torch::Tensor p = probabilities.to(torch::kFloat64);  // (windows, K, W)
  const int64_t K = p.size(1), W = p.size(2);
  const int64_t end = starts.back() + W - base_;
  if (total_.size(0) != K) total_ = torch::zeros({K, count_.size(0)}, torch::kFloat64);
  if (end > count_.size(0)) {
    const int64_t grow = end - count_.size(0);
    total_ = torch::cat({total_, torch::zeros({K, grow}, torch::kFloat64)}, 1);
    count_ = torch::cat({count_, torch::zeros({grow}, torch::kInt64)});
  }
  auto total = total_.accessor<double, 2>();
  auto count = count_.accessor<int64_t, 1>();
  auto values = p.accessor<double, 3>();
  for (size_t b = 0; b < starts.size(); ++b)
    for (int64_t j = from; j < W; ++j) {
      const int64_t at = starts[b] + j - base_;
      count[at] += 1;
      for (int64_t k = 0; k < K; ++k) total[k][at] += values[b][k][j];
    }
}

StepOutput StepStream::answer(int64_t until) {
  const int64_t n = std::max<int64_t>(0, std::min<int64_t>(until - base_, count_.size(0)));
  const int64_t K = total_.size(0);
  StepOutput out;
  std::vector<int64_t> covered;
  auto count = count_.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i)
    if (count[i] > 0) covered.push_back(i);
  if (covered.empty()) {  // nothing final yet
    out.probabilities = torch::zeros({0, K}, torch::kFloat32);
    out.label = argmax_ ? torch::zeros({0}, torch::kInt64) : torch::zeros({0, K}, torch::kInt64);
  } else {
    torch::Tensor index = torch::tensor(covered, torch::kInt64);
    torch::Tensor mean = total_.index_select(1, index) / count_.index_select(0, index);
    out.probabilities = mean.t().contiguous().to(torch::kFloat32);  // (m, K)
    out.label = argmax_ ? out.probabilities.argmax(1) : (out.probabilities > 0.5).to(torch::kInt64);
  }
  for (int64_t i : covered) out.sample.push_back(base_ + i);
  base_ += n;
  total_ = total_.narrow(1, n, total_.size(1) - n).contiguous();
  count_ = count_.narrow(0, n, count_.size(0) - n).contiguous();
  return out;
}

}  // namespace pipeline
