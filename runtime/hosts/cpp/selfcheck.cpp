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

std::vector<Row> run_case(pipeline::Bundle& bundle, const Json& c) {
  double atol = c["atol"].get<double>(), rtol = c["rtol"].get<double>();
  std::vector<Row> rows;
  if (c.contains("stream")) run_stream(bundle, c, atol, rtol, rows);
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
  if (cases_file.empty()) cases_file = dir + "/golden.json";
  try {
    pipeline::Bundle bundle(dir, pipeline::engine_from_name(engine), public_key);
    std::vector<Row> all;
    try {  // cases not in the golden.json layout: one line naming the file
      Json cases = pipeline::read_json_file(cases_file);
      std::vector<Json> list = cases.is_array() ? cases.get<std::vector<Json>>() : std::vector<Json>{cases};
      for (const auto& c : list) {
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
