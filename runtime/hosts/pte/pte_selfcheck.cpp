// Self-check of a bundle's ExecuTorch programs, linked against ExecuTorch's runtime only (no libtorch, no
// libpython): its golden data (or other cases in the same JSON layout: stream and fine-tuning cases too) through
// model.pte, loss.pte and train.pte, compared with eager PyTorch's outputs.
//   pte_selfcheck BUNDLE_DIR [--cases cases.json] [--public-key PUBLIC.pem] [--precision fp32|int8|auto]
// An int8 model program (model.int8.pte) is held to its own golden outputs (golden.json model_int8_pte) at the
// tolerance of manifest.json pte.int8, as `pipeline verify` holds it.
//   exit 0: all match, 1: mismatch, 2: bad bundle, input or usage
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "pte_bundle.hpp"

using pipeline::Json;
using pipeline::pte::Array;

namespace {

struct Row {
  std::string graph, output, shape;
  double max_abs = 0, max_rel = 0;
  bool ok = true;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + std::to_string(shape[i]);
  return out + "]";
}

double at(const Array& a, size_t k) { return a.dtype == "int64" ? static_cast<double>(a.i[k]) : a.f[k]; }

Row compare(const std::string& graph, const std::string& name, const Array& expected, const Array& got, double atol,
            double rtol) {
  Row row{graph, name, shape_text(expected.shape)};
  if (expected.shape != got.shape) {
    row.ok = false;
    row.max_abs = INFINITY;
    return row;
  }
  for (size_t k = 0; k < static_cast<size_t>(expected.numel()); ++k) {
    double e = at(expected, k), a = at(got, k), diff = std::abs(a - e);
    row.max_abs = std::max(row.max_abs, diff);
    row.max_rel = std::max(row.max_rel, diff / std::max(std::abs(e), 1e-12));
    if (!(diff <= atol + rtol * std::abs(e))) row.ok = false;
  }
  return row;
}

// (channels, samples) columns [from, from + n)
Array columns(const Array& a, int64_t from, int64_t n) {
  Array out{{a.shape[0], n}};
  for (int64_t c = 0; c < a.shape[0]; ++c)
    out.f.insert(out.f.end(), a.f.begin() + c * a.shape[1] + from, a.f.begin() + c * a.shape[1] + from + n);
  return out;
}

void run_stream(pipeline::pte::Bundle& bundle, const Json& s, double atol, double rtol, std::vector<Row>& rows) {
  Array recording = pipeline::pte::array_from_json(s["recording"]);
  auto names = bundle.output_names();
  auto expected_start = s["outputs"]["start"]["data"].get<std::vector<int64_t>>();
  for (const auto& chunking : s["chunkings"]) {
    pipeline::pte::Stream stream(bundle);
    std::vector<int64_t> start;
    std::vector<Array> joined(names.size());
    int64_t from = 0;
    for (const auto& size : chunking) {
      int64_t n = size.get<int64_t>();
      auto out = stream.push(columns(recording, from, n));
      start.insert(start.end(), out.start.begin(), out.start.end());
      for (size_t k = 0; k < names.size() && !out.start.empty(); ++k) {
        if (joined[k].shape.empty()) joined[k] = out.outputs[k];
        else {
          joined[k].shape[0] += out.outputs[k].shape[0];
          joined[k].f.insert(joined[k].f.end(), out.outputs[k].f.begin(), out.outputs[k].f.end());
          joined[k].i.insert(joined[k].i.end(), out.outputs[k].i.begin(), out.outputs[k].i.end());
        }
      }
      from += n;
    }
    Row row{"stream", "start", "[" + std::to_string(start.size()) + "]"};
    row.ok = start == expected_start;
    row.max_abs = row.ok ? 0 : INFINITY;
    rows.push_back(row);
    for (size_t k = 0; k < names.size(); ++k)
      rows.push_back(compare("stream", names[k], pipeline::pte::array_from_json(s["outputs"][names[k]]), joined[k],
                             atol, rtol));
  }
}

// A fine-tuning case: `steps` SGD steps at `lr` on x and target; the loss before each step and every trained
// parameter after the last against the expected (eager PyTorch's torch.optim.SGD on the same data).
void run_finetune(pipeline::pte::Bundle& bundle, const Json& f, double atol, double rtol, std::vector<Row>& rows) {
  auto losses = bundle.finetune(pipeline::pte::array_from_json(f["x"]), pipeline::pte::array_from_json(f["target"]),
                                f["steps"].get<int>(), f["lr"].get<float>());
  Array got{{static_cast<int64_t>(losses.size())}, losses};
  rows.push_back(compare("train", "loss", pipeline::pte::array_from_json(f["outputs"]["loss"]), got, atol, rtol));
  for (const auto& [name, value] : bundle.trainer().parameters()) {
    Array expected = pipeline::pte::array_from_json(f["outputs"][name]);
    Array same = value;
    same.shape = expected.shape;  // the program keeps a convolution's weight in its (1, k) 2D layout
    rows.push_back(compare("train", name, expected, same, atol, rtol));
  }
}

std::vector<Row> run_case(pipeline::pte::Bundle& bundle, const Json& c) {
  double atol = c["atol"].get<double>(), rtol = c["rtol"].get<double>();
  std::vector<Row> rows;
  if (c.contains("finetune")) run_finetune(bundle, c["finetune"], atol, rtol, rows);
  if (c.contains("stream")) run_stream(bundle, c["stream"], atol, rtol, rows);
  bool int8 = bundle.precision() == "int8";
  if (int8 && c.contains("model") && !c.contains("model_int8_pte"))
    throw pipeline::BundleError("golden.json: has no model_int8_pte outputs for model.int8.pte; re-export the bundle");
  if (c.contains("model")) {
    const Json& model = c[int8 ? "model_int8_pte" : "model"];
    const Json& entry = bundle.manifest()["pte"];
    double model_atol = int8 ? entry["int8"]["golden_atol"].get<double>() : atol;
    double model_rtol = int8 ? entry["int8"]["golden_rtol"].get<double>() : rtol;
    auto outputs = bundle.predict(pipeline::pte::array_from_json(model["inputs"]["x"]));
    auto names = bundle.output_names();
    for (size_t k = 0; k < names.size(); ++k)
      rows.push_back(compare(int8 ? "model (int8)" : "model", names[k],
                             pipeline::pte::array_from_json(model["outputs"][names[k]]), outputs.at(k), model_atol,
                             model_rtol));
  }
  if (c.contains("loss")) {
    const Json& in = c["loss"]["inputs"];
    auto [loss, per_sample] = bundle.loss(pipeline::pte::array_from_json(in["prediction"]),
                                          pipeline::pte::array_from_json(in["target"]));
    rows.push_back(compare("loss", "loss", pipeline::pte::array_from_json(c["loss"]["outputs"]["loss"]), loss,
                           atol, rtol));
    rows.push_back(compare("loss", "per_sample_loss",
                           pipeline::pte::array_from_json(c["loss"]["outputs"]["per_sample_loss"]), per_sample, atol,
                           rtol));
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, cases_file, public_key, precision = "fp32";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--cases" && i + 1 < argc) cases_file = argv[++i];
    else if (arg == "--public-key" && i + 1 < argc) public_key = argv[++i];
    else if (arg == "--precision" && i + 1 < argc) precision = argv[++i];
    else dir = arg;
  }
  if (dir.empty()) {
    std::cerr << "usage: pte_selfcheck BUNDLE_DIR [--cases cases.json] [--public-key PUBLIC.pem] [--precision fp32|int8|auto]\n";
    return 2;
  }
  if (cases_file.empty()) cases_file = dir + "/golden.json";
  try {
    pipeline::pte::Bundle bundle(dir, public_key, precision);
    std::vector<Row> all;
    try {
      Json cases = pipeline::read_json_file(cases_file);
      std::vector<Json> list = cases.is_array() ? cases.get<std::vector<Json>>() : std::vector<Json>{cases};
      for (const auto& c : list) {
        auto rows = run_case(bundle, c);
        all.insert(all.end(), rows.begin(), rows.end());
      }
    } catch (const Json::exception& err) {
      throw pipeline::BundleError(cases_file + ": not in the golden.json layout (" + err.what() + "); re-export the bundle");
    }
    int bad = 0;
    for (const auto& r : all) {
      std::printf("%-6s %-16s %-12s max_abs %.2e max_rel %.2e %s\n", r.graph.c_str(), r.output.c_str(),
                  r.shape.c_str(), r.max_abs, r.max_rel, r.ok ? "ok" : "MISMATCH");
      bad += r.ok ? 0 : 1;
    }
    std::fflush(stdout);
    if (bad) std::cerr << bad << " output(s) differ beyond atol/rtol\n";
    else std::cerr << "all " << all.size() << " outputs match (ExecuTorch" << (bundle.precision() == "int8" ? ", model.int8.pte" : "")
                   << (bundle.signed_by().empty() ? "" : ", signature verified (key " + bundle.signed_by().substr(0, 16) + ")")
                   << ")\n";
    return bad ? 1 : 0;
  } catch (const std::exception& err) {
    std::cerr << "Error: " << err.what() << "\n";
    return 2;
  }
}
