// One live recording as a stream (the runtime's runtime.windows.Stream, in C++): push chunks of any length,
// get the outputs of every window they complete, in order, with their start samples. Windows are the
// manifest's "window" (length, stride), or the model's length with no overlap. It holds the last length - 1
// samples per channel and nothing of the history before them.
//
//   pipeline::Stream stream(bundle);
//   pipeline::StreamOutput out = stream.push(chunk);   // chunk: float32 (channels, n), n >= 0
//   // out.start[i]: window i's first sample; out.outputs[k]: (windows, ...) of bundle.output_names()[k]
#pragma once
#include <torch/script.h>

#include <cstdint>
#include <vector>

#include "bundle.hpp"

namespace pipeline {

struct StreamOutput {
  std::vector<int64_t> start;
  std::vector<torch::Tensor> outputs;  // one per output name; empty tensors when no window completed
};

class Stream {
 public:
  explicit Stream(Bundle& bundle, int64_t length = 0, int64_t stride = 0);
  StreamOutput push(const torch::Tensor& chunk);
  int64_t length() const { return length_; }
  int64_t stride() const { return stride_; }

 private:
  Bundle& bundle_;
  int64_t channels_, length_, stride_;
  int64_t seen_ = 0;        // samples pushed so far
  int64_t next_start_ = 0;  // start sample of the next window to complete
  torch::Tensor held_;      // (channels, length - 1): the last samples pushed
  friend class StepStream;
};

// A per-step bundle's stream (--window-label each; the runtime's runtime.segments.StepStream). A sample's
// probabilities are the mean of the per-step probabilities of every window covering it; its label the most
// probable class (multiclass: (n)) or probability > 0.5 (binary, multilabel: (n, K)). push() answers every sample
// all of whose windows have arrived; finish() the rest when the recording ends, the samples after the last window
// from the tail window that ends at the last sample.
//
//   pipeline::StepStream stream(bundle);
//   pipeline::StepOutput out = stream.push(chunk);   // out.sample, out.probabilities (n, K), out.label
//   pipeline::StepOutput rest = stream.finish();
struct StepOutput {
  std::vector<int64_t> sample;
  torch::Tensor probabilities;  // float32 (n, K)
  torch::Tensor label;          // int64 (n) or (n, K)
};

class StepStream {
 public:
  explicit StepStream(Bundle& bundle, int64_t length = 0, int64_t stride = 0);
  StepOutput push(const torch::Tensor& chunk);
  StepOutput finish();

 private:
  void add(const std::vector<int64_t>& starts, const torch::Tensor& probabilities, int64_t from);
  StepOutput answer(int64_t until);
  Stream windows_;
  Bundle& bundle_;
  size_t output_;           // the probabilities' index among the outputs
  bool argmax_;             // multiclass: the most probable class; else probability > 0.5
  torch::Tensor recent_;    // (channels, length): the last samples, for the tail window
  int64_t base_ = 0;        // the first sample not yet answered
  torch::Tensor total_;     // (K, m) float64 sums of samples base_.., and how many windows covered each
  torch::Tensor count_;     // (m) int64
};

}  // namespace pipeline
