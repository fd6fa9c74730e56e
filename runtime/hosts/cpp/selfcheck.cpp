// Self-check: run a bundle's golden data (or other cases in the same JSON layout) through the model and
// loss graphs (AOTInductor packages or TorchScript, see Engine) and compare with eager PyTorch's outputs.
//   selfcheck BUNDLE_DIR [--cases cases.json] [--engine auto|torchscript|aoti] [--public-key PUBLIC.pem]
//   exit 0: all match, 1: mismatch, 2: bad bundle/usage
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "bundle.hpp"
#include "forecast.hpp"
#include "stream.hpp"

using pipeline::Json;

namespace {

struct Row {
  std::string graph, output, shape;
  double max_abs = 0, max_rel = 0;
  bool ok = true;
};

std::string shape_text(const Json& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + std::to_string(shape[i].get<long long>());
  return out + "]";
}

Row compare(const std::string& graph, const std::string& name, const Json& expected_json, const torch::Tensor& actual,
            double atol, double rtol) {
  Row row{graph, name, shape_text(expected_json["shape"])};
  torch::Tensor expected = pipeline::tensor_from_json(expected_json).to(torch::kFloat64);
  torch::Tensor got = actual.to(torch::kFloat64);
  if (expected.sizes() != got.sizes()) {
    row.ok = false;
    return row;
  }
  auto e = expected.reshape(-1), a = got.reshape(-1);
  for (int64_t i = 0; i < e.numel(); ++i) {
    double ev = e[i].item<double>(), av = a[i].item<double>(), diff = std::abs(av - ev);
    row.max_abs = std::max(row.max_abs, diff);
    row.max_rel = std::max(row.max_rel, diff / std::max(std::abs(ev), 1e-12));
    if (!(diff <= atol + rtol * std::abs(ev))) row.ok = false;
  }
  return row;
}

// A stream case: the recording pushed in each chunking; every window's start and outputs against the expected.
void run_stream(pipeline::Bundle& bundle, const Json& c, double atol, double rtol, std::vector<Row>& rows) {
  const Json& s = c["stream"];
  torch::Tensor recording = pipeline::tensor_from_json(s["recording"]);  // (channels, samples)
  auto names = bundle.output_names();
  std::vector<int64_t> expected_start = s["outputs"]["start"]["data"].get<std::vector<int64_t>>();
  for (const auto& chunking : s["chunkings"]) {
    pipeline::Stream stream(bundle);
    std::vector<int64_t> start;
    std::vector<std::vector<torch::Tensor>> parts(names.size());
    int64_t at = 0;
    for (const auto& size : chunking) {
      int64_t n = size.get<int64_t>();
      auto out = stream.push(recording.narrow(1, at, n));
      start.insert(start.end(), out.start.begin(), out.start.end());
      for (size_t k = 0; k < names.size(); ++k)
        if (out.outputs[k].defined()) parts[k].push_back(out.outputs[k]);
      at += n;
    }
    Row row{"stream", "start", "[" + std::to_string(start.size()) + "]"};
    row.ok = start == expected_start;
    row.max_abs = row.ok ? 0 : INFINITY;
    rows.push_back(row);
    for (size_t k = 0; k < names.size(); ++k) {
      const Json& expected = s["outputs"][names[k]];
      torch::Tensor got = parts[k].empty() ? torch::zeros({0}) : torch::cat(parts[k]);
      rows.push_back(compare("stream", names[k], expected, got, atol, rtol));
    }
  }
}

// A per-step case: the recording pushed in each chunking and finished; every answered sample, its stitched
// probabilities and label against the expected (eager's windows stitched by a plain loop).
void run_steps(pipeline::Bundle& bundle, const Json& c, double atol, double rtol, std::vector<Row>& rows) {
  const Json& s = c["steps"];
  torch::Tensor recording = pipeline::tensor_from_json(s["recording"]);  // (channels, samples)
  std::vector<int64_t> expected_sample = s["outputs"]["sample"]["data"].get<std::vector<int64_t>>();
  for (const auto& chunking : s["chunkings"]) {
    pipeline::StepStream stream(bundle);
    std::vector<int64_t> sample;
    std::vector<torch::Tensor> probabilities, labels;
    auto keep = [&](const pipeline::StepOutput& out) {
      sample.insert(sample.end(), out.sample.begin(), out.sample.end());
      if (!out.sample.empty()) probabilities.push_back(out.probabilities), labels.push_back(out.label);
    };
    int64_t at = 0;
    for (const auto& size : chunking) {
      int64_t n = size.get<int64_t>();
      keep(stream.push(recording.narrow(1, at, n)));
      at += n;
    }
    keep(stream.finish());
    Row row{"steps", "sample", "[" + std::to_string(sample.size()) + "]"};
    row.ok = sample == expected_sample;
    row.max_abs = row.ok ? 0 : INFINITY;
    rows.push_back(row);
    rows.push_back(compare("steps", "probabilities", s["outputs"]["probabilities"],
                           probabilities.empty() ? torch::zeros({0}) : torch::cat(probabilities), atol, rtol));
    rows.push_back(compare("steps", "label", s["outputs"]["label"],
                           labels.empty() ? torch::zeros({0}) : torch::cat(labels), atol, rtol));
  }
}

// A forecast case: the rollout of `steps` samples after the history against the expected (eager's same loop).
void run_forecast(pipeline::Bundle& bundle, const Json& c, double atol, double rtol, std::vector<Row>& rows) {
  const Json& f = c["forecast"];
  torch::Tensor got = pipeline::forecast(bundle, pipeline::tensor_from_json(f["history"]), f["steps"].get<int64_t>());
  rows.push_back(compare("forecast", "forecast", f["outputs"]["forecast"], got, atol, rtol));
}

// The first way a golden.json case breaks the layout every host reads, in the words of runtime/golden.py and
// the JavaScript kits, or "". required: the graphs the case must hold (a bundle's golden.json: model and loss).
const double kSafeInteger = 9007199254740992.0;  // 2^53: integers every host reads exactly

bool is_integer(const Json& v) {
  return v.is_number_integer() && std::abs(v.get<double>()) <= kSafeInteger;
}

bool is_number(const Json& v) { return v.is_number() && std::isfinite(v.get<double>()); }

std::string tensor_problem(const Json& entry, const std::string& where) {
  if (!entry.is_object()) return "'" + where + "' must be an object with shape, dtype and data";
  const Json shape = entry.contains("shape") ? entry["shape"] : Json();
  bool shape_ok = shape.is_array();
  double size = 1;
  if (shape_ok) {
    for (const auto& d : shape) {
      if (!is_integer(d) || d.get<double>() < 0) { shape_ok = false; break; }
      size *= d.get<double>();
    }
  }
  if (!shape_ok) return "'" + where + ".shape' must be a list of integers >= 0";
  const Json dtype = entry.contains("dtype") ? entry["dtype"] : Json();
  if (!(dtype.is_string() && (dtype == "float32" || dtype == "int64")))
    return "'" + where + ".dtype' must be \"float32\" or \"int64\"";
  bool integers = dtype == "int64";
  const Json data = entry.contains("data") ? entry["data"] : Json();
  bool data_ok = data.is_array() && static_cast<double>(data.size()) == size;
  if (data_ok) {
    for (const auto& v : data) {
      if (!(integers ? is_integer(v) : is_number(v))) { data_ok = false; break; }
    }
  }
  if (!data_ok) {
    char count[32];
    std::snprintf(count, sizeof count, "%.0f", size);
    return "'" + where + ".data' must be a list of " + count + (integers ? " integers" : " numbers");
  }
  return "";
}

std::string golden_layout_problem(const Json& manifest, const Json& c, const std::vector<std::string>& required) {
  if (!c.is_object()) return "the case is not an object";
  for (const char* key : {"atol", "rtol"}) {
    if (!c.contains(key) || !is_number(c[key]) || c[key].get<double>() < 0)
      return std::string("'") + key + "' must be a number >= 0";
  }
  std::vector<std::string> model_in{manifest["input"]["name"].get<std::string>()};
  std::vector<std::string> model_out = manifest["outputs"].get<std::vector<std::string>>();
  std::vector<std::string> loss_in, loss_out = manifest["loss"]["outputs"].get<std::vector<std::string>>();
  for (const auto& t : manifest["loss"]["inputs"]) loss_in.push_back(t["name"].get<std::string>());
  const std::vector<std::pair<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>>> graphs{
      {"model", {model_in, model_out}}, {"loss", {loss_in, loss_out}}, {"model_int8", {model_in, model_out}}};
  for (const auto& [graph, parts] : graphs) {
    if (!c.contains(graph)) {
      if (std::find(required.begin(), required.end(), graph) != required.end()) return "'" + graph + "' is missing";
      continue;
    }
    const Json& entry = c[graph];
    if (!entry.is_object()) return "'" + graph + "' must be an object with inputs and outputs";
    for (const auto& [part, expected] : {std::make_pair(std::string("inputs"), parts.first),
                                         std::make_pair(std::string("outputs"), parts.second)}) {
      std::vector<std::string> want = expected, got;
      bool ok = entry.contains(part) && entry[part].is_object();
      if (ok) {
        for (const auto& item : entry[part].items()) got.push_back(item.key());
        std::sort(want.begin(), want.end());
        std::sort(got.begin(), got.end());
        ok = got == want;
      }
      if (!ok) {
        std::string names;
        for (size_t i = 0; i < expected.size(); ++i)
          names += (i ? ", " : "") + (expected[i].size() <= 60 ? expected[i] : expected[i].substr(0, 60) + "...");
        return "'" + graph + "." + part + "' must hold " + names;
      }
      for (const auto& name : expected) {
        std::string problem = tensor_problem(entry[part][name], graph + "." + part + "." + name);
        if (!problem.empty()) return problem;
      }
    }
  }
  return "";
}

std::vector<Row> run_case(pipeline::Bundle& bundle, const Json& c) {
  double atol = c["atol"].get<double>(), rtol = c["rtol"].get<double>();
  std::vector<Row> rows;
  if (c.contains("stream")) run_stream(bundle, c, atol, rtol, rows);
  if (c.contains("forecast")) run_forecast(bundle, c, atol, rtol, rows);
  if (c.contains("steps")) run_steps(bundle, c, atol, rtol, rows);
  if (c.contains("model")) {
    auto outputs = bundle.predict(pipeline::tensor_from_json(c["model"]["inputs"]["x"]));
    auto names = bundle.output_names();
    for (size_t k = 0; k < names.size(); ++k)
      rows.push_back(compare("model", names[k], c["model"]["outputs"][names[k]], outputs.at(k), atol, rtol));
  }
  if (c.contains("loss")) {
    const Json& inputs = c["loss"]["inputs"];
    auto [loss, per_sample] = bundle.loss(pipeline::tensor_from_json(inputs["prediction"]),
                                          pipeline::tensor_from_json(inputs["target"]));
    rows.push_back(compare("loss", "loss", c["loss"]["outputs"]["loss"], loss, atol, rtol));
    rows.push_back(compare("loss", "per_sample_loss", c["loss"]["outputs"]["per_sample_loss"], per_sample, atol, rtol));
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, cases_file, engine = "auto", public_key;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--cases" && i + 1 < argc) cases_file = argv[++i];
    else if (arg == "--engine" && i + 1 < argc) engine = argv[++i];
    else if (arg == "--public-key" && i + 1 < argc) public_key = argv[++i];
    else dir = arg;
  }
  if (dir.empty()) {
    std::cerr << "usage: selfcheck BUNDLE_DIR [--cases cases.json] [--engine auto|torchscript|aoti] "
                 "[--public-key PUBLIC.pem]\n";
    return 2;
  }
  // a bundle's own golden.json holds both graphs; a --cases file may hold either, or a stream
  std::vector<std::string> required;
  if (cases_file.empty()) required = {"model", "loss"};
  if (cases_file.empty()) cases_file = dir + "/golden.json";
  try {
    pipeline::Bundle bundle(dir, pipeline::engine_from_name(engine), public_key);
    std::vector<Row> all;
    try {  // cases not in the golden.json layout: one line naming the file
      Json cases = pipeline::read_json_file(cases_file);
      std::vector<Json> list = cases.is_array() ? cases.get<std::vector<Json>>() : std::vector<Json>{cases};
      for (const auto& c : list) {
        std::string problem = golden_layout_problem(bundle.manifest(), c, required);
        if (!problem.empty())
          throw pipeline::BundleError(cases_file + ": not in the golden.json layout (" + problem + "); re-export the bundle");
        auto rows = run_case(bundle, c);
        all.insert(all.end(), rows.begin(), rows.end());
      }
    } catch (const Json::exception& err) {
      throw pipeline::BundleError(cases_file + ": not in the golden.json layout (" + err.what() + "); re-export the bundle");
    } catch (const c10::Error& err) {
      std::string why = err.what_without_backtrace();
      throw pipeline::BundleError(cases_file + ": not in the golden.json layout (" + why.substr(0, why.find('\n')) +
                                  "); re-export the bundle");
    }
    int bad = 0, total = 0;
    {
      for (const auto& r : all) {
        std::printf("%-6s %-16s %-12s max_abs %.2e max_rel %.2e %s\n", r.graph.c_str(), r.output.c_str(),
                    r.shape.c_str(), r.max_abs, r.max_rel, r.ok ? "ok" : "MISMATCH");
        bad += r.ok ? 0 : 1;
        ++total;
      }
    }
    std::fflush(stdout);
    if (bad) std::cerr << bad << " output(s) differ beyond atol/rtol\n";
    else std::cerr << "all " << total << " outputs match (engine " << pipeline::engine_name(bundle.engine())
                   << (bundle.signed_by().empty() ? "" : ", signature verified (key " + bundle.signed_by().substr(0, 16) + ")")
                   << ")\n";
    return bad ? 1 : 0;
  } catch (const std::exception& err) {
    std::cerr << "Error: " << err.what() << "\n";
    return 2;
  }
}
