#include "pte_bundle.hpp"

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace pipeline::pte {
namespace fs = std::filesystem;
using executorch::extension::Module;
using executorch::runtime::EValue;

int64_t Array::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Array array_from_json(const Json& entry) {
  Array a;
  a.shape = entry["shape"].get<std::vector<int64_t>>();
  a.dtype = entry["dtype"].get<std::string>();
  if (a.dtype == "int64") a.i = entry["data"].get<std::vector<int64_t>>();
  else a.f = entry["data"].get<std::vector<float>>();
  return a;
}

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

std::string error_name(executorch::runtime::Error err) {
  char code[16];
  std::snprintf(code, sizeof code, "0x%x", static_cast<unsigned>(err));
  return code;
}

// rows [start, start + n) of a (batch, ...) array
Array rows(const Array& a, int64_t start, int64_t n) {
  Array out;
  out.shape = a.shape;
  out.shape[0] = n;
  out.dtype = a.dtype;
  int64_t row = a.shape.empty() || a.shape[0] == 0 ? 0 : a.numel() / a.shape[0];
  if (a.dtype == "int64") out.i.assign(a.i.begin() + start * row, a.i.begin() + (start + n) * row);
  else out.f.assign(a.f.begin() + start * row, a.f.begin() + (start + n) * row);
  return out;
}

void append_rows(Array& to, const Array& from) {
  if (to.shape.empty()) {
    to = from;
    return;
  }
  to.shape[0] += from.shape[0];
  to.f.insert(to.f.end(), from.f.begin(), from.f.end());
  to.i.insert(to.i.end(), from.i.begin(), from.i.end());
}

// ExecuTorch's log: errors go to stderr, its info lines (CPU detection at load) are not the user's business
void quiet_log(et_timestamp_t, et_pal_log_level_t level, const char* file, const char*, size_t line,
               const char* message, size_t length) {
  if (level == kError || level == kFatal)
    std::fprintf(stderr, "ExecuTorch %c %s:%zu] %.*s\n", static_cast<char>(level), file, line,
                 static_cast<int>(length), message);
}

const bool kQuiet = executorch::runtime::register_pal(executorch::runtime::PalImpl::create(quiet_log, __FILE__));

// The program file of `spec` with its method loaded. File mode reads it into memory this process owns (a
// training program's parameters are updated there in place).
std::unique_ptr<Module> load_module(const std::string& dir, const Json& spec) {
  (void)kQuiet;
  std::string path = (fs::path(dir) / spec["file"].get<std::string>()).string();
  auto module = std::make_unique<Module>(path, Module::LoadMode::File);
  auto err = module->load_method(spec["method"].get<std::string>());
  if (err != executorch::runtime::Error::Ok)
    throw BundleError(path + ": ExecuTorch could not load method " + spec["method"].get<std::string>() + " (error " +
                      error_name(err) + "); re-export the bundle with an ExecuTorch this runtime reads");
  return module;
}

}  // namespace

Program::Program(const std::string& dir, const Json& spec) : spec_(spec), module_(load_module(dir, spec)) {}

Program::~Program() = default;

int64_t Program::max_batch() const { return spec_["inputs"][0]["shape"][0].get<int64_t>(); }

void Program::check(const std::vector<Array>& inputs) const { check_inputs(spec_, inputs); }

void Program::check_inputs(const Json& spec_, const std::vector<Array>& inputs) {
  const Json& specs = spec_["inputs"];
  const std::string file = spec_["file"].get<std::string>(), method = spec_["method"].get<std::string>();
  if (inputs.size() != specs.size()) {
    std::string names;
    for (size_t k = 0; k < specs.size(); ++k) names += (k ? ", " : "") + specs[k]["name"].get<std::string>();
    throw BundleError(file + ": takes " + std::to_string(specs.size()) + " input(s) (" + names + "), got " +
                      std::to_string(inputs.size()));
  }
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Json& s = specs[k];
    auto limit = s["shape"].get<std::vector<int64_t>>();
    auto dynamic = s["dynamic"].get<std::vector<int64_t>>();
    auto axes = s["axes"].get<std::vector<std::string>>();
    const auto& shape = inputs[k].shape;
    bool fits = shape.size() == limit.size();
    for (size_t a = 0; fits && a < shape.size(); ++a) {
      bool dyn = std::find(dynamic.begin(), dynamic.end(), static_cast<int64_t>(a)) != dynamic.end();
      fits = dyn ? (shape[a] >= 1 && shape[a] <= limit[a]) : shape[a] == limit[a];
    }
    std::string name = s["name"].get<std::string>();
    if (!fits) {
      std::string takes = "(";
      for (size_t a = 0; a < limit.size(); ++a) {
        bool dyn = std::find(dynamic.begin(), dynamic.end(), static_cast<int64_t>(a)) != dynamic.end();
        takes += (a ? ", " : "") + (dyn ? axes[a] + " 1.." + std::to_string(limit[a]) : std::to_string(limit[a]));
      }
      throw BundleError(name + ": shape " + shape_text(shape) + " does not fit " + file + " " + method +
                        ": it takes " + takes + "); cut larger batches into calls of at most " +
                        std::to_string(limit[0]));
    }
    if (inputs[k].dtype != s["dtype"].get<std::string>())
      throw BundleError(name + ": dtype " + inputs[k].dtype + "; " + file + " " + method + " takes " +
                        s["dtype"].get<std::string>());
  }
}

std::vector<Array> Program::run(const std::vector<Array>& inputs) {
  check(inputs);
  std::vector<executorch::extension::TensorPtr> tensors;
  std::vector<EValue> values;
  for (const auto& a : inputs) {
    std::vector<executorch::aten::SizesType> sizes(a.shape.begin(), a.shape.end());
    if (a.dtype == "int64") tensors.push_back(executorch::extension::make_tensor_ptr(sizes, a.i));
    else tensors.push_back(executorch::extension::make_tensor_ptr(sizes, a.f));
    values.emplace_back(tensors.back());
  }
  auto result = module_->execute(spec_["method"].get<std::string>(), values);
  if (!result.ok())
    throw BundleError(spec_["file"].get<std::string>() + ": ExecuTorch failed to run it (error " +
                      error_name(result.error()) + ")");
  std::vector<Array> out;
  for (const auto& value : result.get()) {
    const auto& t = value.toTensor();
    Array a;
    for (auto d : t.sizes()) a.shape.push_back(d);
    if (t.scalar_type() == executorch::aten::ScalarType::Long) {
      a.dtype = "int64";
      a.i.assign(t.const_data_ptr<int64_t>(), t.const_data_ptr<int64_t>() + t.numel());
    } else {
      a.f.assign(t.const_data_ptr<float>(), t.const_data_ptr<float>() + t.numel());
    }
    out.push_back(std::move(a));
  }
  return out;
}

Bundle::Bundle(const std::string& dir, const std::string& public_key, const std::string& precision) : dir_(dir) {
  if (precision != "fp32" && precision != "int8" && precision != "auto")
    throw BundleError("precision '" + precision + "' is not valid; choose one of fp32, int8, auto");
  manifest_ = checked_manifest(dir, public_key, signed_by_);
  if (!manifest_.contains("pte") && !manifest_.contains("pte_train"))
    throw BundleError(dir + ": has no ExecuTorch programs; re-export with --format pte (or a list with pte)");
  if (manifest_.contains("pte")) {
    const Json& pte = manifest_["pte"];
    if (precision == "int8" && !pte.contains("model_int8"))
      throw BundleError(dir + ": has no model.int8.pte; re-export with `pipeline export RUN_DIR --format pte "
                        "--quantize int8`, or run it in fp32");
    precision_ = pte.contains("model_int8") && precision != "fp32" ? "int8" : "fp32";
    model_ = std::make_unique<Program>(dir, pte[precision_ == "int8" ? "model_int8" : "model"]);
    loss_ = std::make_unique<Program>(dir, manifest_["pte"]["loss"]);
  }
}

Trainer& Bundle::trainer() {
  if (!manifest_.contains("pte_train"))
    throw BundleError(dir_ + ": has no fine-tuning program; re-export with --format pte-train");
  if (!trainer_) trainer_ = std::make_unique<Trainer>(dir_, manifest_["pte_train"]);
  return *trainer_;
}

std::vector<float> Bundle::finetune(const Array& x, const Array& target, int steps, float lr) {
  return trainer().finetune(x, target, steps, lr);
}

Trainer::Trainer(const std::string& dir, const Json& spec) : spec_(spec), module_(load_module(dir, spec)) {
  if (spec.contains("features")) features_ = std::make_unique<Program>(dir, spec["features"]);
}

Trainer::~Trainer() = default;

std::vector<float> Trainer::finetune(const Array& x, const Array& target, int steps, float lr) {
  const std::string method = spec_["method"].get<std::string>();
  Json program = {{"file", spec_["file"]}, {"method", method}, {"inputs", spec_["inputs"]}};
  Program::check_inputs(program, {x, target});
  auto index = [&](const std::string& prefix) {
    auto r = module_->execute(prefix + method);
    if (!r.ok()) throw BundleError(spec_["file"].get<std::string>() + ": not a training program (no " + prefix + ")");
    return static_cast<size_t>(r.get()[0].toInt());
  };
  const size_t grads = index("__et_training_gradients_index_"), params = index("__et_training_parameters_index_");
  // the network below the head is frozen (pte_train.features): its features once, then the steps train on them
  const Array input = features_ ? features_->run({x}).at(0) : x;
  std::vector<float> losses;
  for (int step = 0; step < steps; ++step) {
    std::vector<executorch::extension::TensorPtr> tensors;
    std::vector<EValue> values;
    for (const Array* a : {&input, &target}) {
      std::vector<executorch::aten::SizesType> sizes(a->shape.begin(), a->shape.end());
      if (a->dtype == "int64") tensors.push_back(executorch::extension::make_tensor_ptr(sizes, a->i));
      else tensors.push_back(executorch::extension::make_tensor_ptr(sizes, a->f));
      values.emplace_back(tensors.back());
    }
    auto result = module_->execute(method, values);
    if (!result.ok())
      throw BundleError(spec_["file"].get<std::string>() + ": ExecuTorch failed to run it (error " +
                        error_name(result.error()) + ")");
    auto& out = result.get();
    losses.push_back(out[0].toTensor().const_data_ptr<float>()[0]);
    params_.clear();
    for (size_t k = 0; k < params - grads; ++k) {  // SGD in place: the outputs are the parameters themselves
      const auto& g = out[grads + k].toTensor();
      auto p = out[params + k].toTensor();
      float* w = p.mutable_data_ptr<float>();
      const float* d = g.const_data_ptr<float>();
      for (int64_t e = 0; e < static_cast<int64_t>(p.numel()); ++e) w[e] -= lr * d[e];
      Array a;
      for (auto n : p.sizes()) a.shape.push_back(n);
      a.f.assign(w, w + p.numel());
      params_.push_back(std::move(a));
    }
  }
  return losses;
}

std::vector<std::pair<std::string, Array>> Trainer::parameters() const {
  std::vector<std::pair<std::string, Array>> out;
  auto names = spec_["parameters"].get<std::vector<std::string>>();
  for (size_t k = 0; k < params_.size() && k < names.size(); ++k) out.emplace_back(names[k], params_[k]);
  return out;
}

std::vector<std::string> Bundle::output_names() const { return manifest_["outputs"].get<std::vector<std::string>>(); }

std::vector<Array> Bundle::predict(const Array& x) {
  if (!model_) throw BundleError(dir_ + ": has no model.pte; re-export with --format pte (or a list with pte)");
  const int64_t bound = model_->max_batch();
  if (x.shape.empty() || x.shape[0] <= bound) return model_->run({x});
  std::vector<Array> joined;
  for (int64_t start = 0; start < x.shape[0]; start += bound) {
    auto part = model_->run({rows(x, start, std::min(bound, x.shape[0] - start))});
    if (joined.empty()) joined.resize(part.size());
    for (size_t k = 0; k < part.size(); ++k) append_rows(joined[k], part[k]);
  }
  return joined;
}

std::pair<Array, Array> Bundle::loss(const Array& prediction, const Array& target) {
  if (!loss_) throw BundleError(dir_ + ": has no loss.pte; re-export with --format pte (or a list with pte)");
  auto out = loss_->run({prediction, target});
  return {out.at(0), out.at(1)};
}

Stream::Stream(Bundle& bundle) : bundle_(bundle) {
  const Json& m = bundle.manifest();
  const Json& x = m["pte"]["model"]["inputs"][0];
  channels_ = x["shape"][1].get<int64_t>();
  length_ = x["shape"][2].get<int64_t>();
  stride_ = m.contains("window") ? m["window"]["stride"].get<int64_t>() : length_;
  held_.resize(channels_);
}

StreamOutput Stream::push(const Array& chunk) {
  if (chunk.shape.size() != 2 || chunk.shape[0] != channels_ || chunk.dtype != "float32")
    throw BundleError("chunk: pass float32 (" + std::to_string(channels_) + ", n) samples per push");
  for (float v : chunk.f)
    if (!std::isfinite(v)) throw BundleError("chunk: holds NaN or Inf; fill gaps before pushing (nothing of this chunk was used)");
  const int64_t n = chunk.shape[1];
  for (int64_t c = 0; c < channels_; ++c)
    held_[c].insert(held_[c].end(), chunk.f.begin() + c * n, chunk.f.begin() + (c + 1) * n);
  const int64_t first = held_from_;  // held_[c][0] is sample held_from_
  seen_ += n;
  StreamOutput out;
  for (int64_t s = next_start_; s + length_ <= seen_; s += stride_) out.start.push_back(s);
  Array windows;
  windows.shape = {static_cast<int64_t>(out.start.size()), channels_, length_};
  for (int64_t s : out.start)
    for (int64_t c = 0; c < channels_; ++c)
      windows.f.insert(windows.f.end(), held_[c].begin() + (s - first), held_[c].begin() + (s - first) + length_);
  if (!out.start.empty()) {
    out.outputs = bundle_.predict(windows);
    next_start_ = out.start.back() + stride_;
  } else {
    for (size_t k = 0; k < bundle_.output_names().size(); ++k) out.outputs.push_back(Array{{0}});
  }
  held_from_ = std::min(next_start_, seen_);  // nothing before the next window's start is needed again
  for (auto& h : held_) h.erase(h.begin(), h.begin() + (held_from_ - first));
  return out;
}

}  // namespace pipeline::pte
