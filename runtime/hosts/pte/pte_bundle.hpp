// A pipeline bundle's ExecuTorch programs in C++, without libtorch: the signature (when a key is given), the
// manifest against manifest.schema.json and every file's sha256 are checked first (../cpp/checked.hpp), then
// model.pte and loss.pte are loaded with ExecuTorch's Module. Every input is checked against the manifest's
// `pte` shapes before a call (the ExecuTorch runtime checks only the element count), in runtime/pte.py's words.
//
//   pipeline::pte::Bundle bundle("artifacts/demo/pte");            // or (dir, "signing.pub.pem")
//   pipeline::pte::Array x{{2, 1, 150}, std::vector<float>(300)};   // float32 (batch, channels, length)
//   std::vector<pipeline::pte::Array> outputs = bundle.predict(x);   // the manifest's outputs, in order
//   auto [loss, per_sample] = bundle.loss(outputs[0], target);       // target: int64 or float32 (manifest loss)
//   pipeline::pte::Stream stream(bundle);                             // windows of a live recording
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "checked.hpp"

namespace executorch::extension::module {
class Module;
}

namespace pipeline::pte {

// A dense row-major array: float32 values in `f`, or int64 values in `i` (dtype "int64").
struct Array {
  std::vector<int64_t> shape;
  std::vector<float> f;
  std::vector<int64_t> i;
  std::string dtype = "float32";
  int64_t numel() const;
};

// {"shape": [...], "dtype": ..., "data": [...]} (golden.json's layout) as an Array.
Array array_from_json(const Json& entry);

// One .pte program with one method: run() checks the inputs against `spec` (manifest.json pte.model or pte.loss).
class Program {
 public:
  Program(const std::string& dir, const Json& spec);
  ~Program();
  std::vector<Array> run(const std::vector<Array>& inputs);
  int64_t max_batch() const;
  // runtime/pte.py's check_inputs: a BundleError naming the first input the program `spec` cannot take
  static void check_inputs(const Json& spec, const std::vector<Array>& inputs);

 private:
  void check(const std::vector<Array>& inputs) const;
  Json spec_;
  std::unique_ptr<executorch::extension::module::Module> module_;
};

// The fine-tuning program (train.pte, export --format pte-train): each step runs the model, the loss and the
// backward pass on exactly its batch, then SGD updates the trained parameters in place (p -= lr * grad), as
// executorch.extension.training's optimizer does. The parameters live in this object; model.pte is not changed.
// With the manifest's pte_train.features (--finetune head), the series go through that program once per call and
// each step trains the head on its output.
class Trainer {
 public:
  Trainer(const std::string& dir, const Json& spec);
  ~Trainer();
  std::vector<float> finetune(const Array& x, const Array& target, int steps, float lr);  // the loss before each step
  std::vector<std::pair<std::string, Array>> parameters() const;  // manifest pte_train.parameters, in order

 private:
  Json spec_;
  std::unique_ptr<executorch::extension::module::Module> module_;
  std::unique_ptr<Program> features_;  // pte_train.features: the frozen network below the head (XNNPACK)
  std::vector<Array> params_;
};

class Bundle {
 public:
  // precision picks the model program: fp32 (model.pte), int8 (model.int8.pte, export --quantize int8) or auto
  // (int8 when the bundle has it), as the Python runtime's
  explicit Bundle(const std::string& dir, const std::string& public_key = "", const std::string& precision = "fp32");
  // x: float32 (batch, channels, length); more series than the program's bound run in calls of the bound
  std::vector<Array> predict(const Array& x);
  std::pair<Array, Array> loss(const Array& prediction, const Array& target);
  // SGD steps of train.pte (a BundleError when the bundle has none); the loss before each step
  std::vector<float> finetune(const Array& x, const Array& target, int steps, float lr);
  Trainer& trainer();
  const Json& manifest() const { return manifest_; }
  std::vector<std::string> output_names() const;
  const std::string& signed_by() const { return signed_by_; }
  const std::string& precision() const { return precision_; }  // the model program that runs: fp32 or int8

 private:
  Json manifest_;
  std::string signed_by_, precision_ = "fp32";
  std::string dir_;
  std::unique_ptr<Program> model_, loss_;
  std::unique_ptr<Trainer> trainer_;
};

// A live recording's windows (runtime.windows.Stream): push chunks (channels, n) of any length and get the
// outputs of every window they complete, in order, with each window's first sample. Windows are the manifest's
// "window" (length, stride), or the program's length with no overlap.
struct StreamOutput {
  std::vector<int64_t> start;
  std::vector<Array> outputs;  // one per output name, (windows, ...); shape[0] == 0 when none completed
};

class Stream {
 public:
  explicit Stream(Bundle& bundle);
  StreamOutput push(const Array& chunk);

 private:
  Bundle& bundle_;
  int64_t channels_, length_, stride_;
  int64_t seen_ = 0, next_start_ = 0, held_from_ = 0;
  std::vector<std::vector<float>> held_;  // per channel: the samples not yet past every window
};

}  // namespace pipeline::pte
