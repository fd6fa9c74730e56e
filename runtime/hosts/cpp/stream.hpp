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
};

}  // namespace pipeline
