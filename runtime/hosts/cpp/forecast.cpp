#include "forecast.hpp"

#include <string>
#include <vector>

namespace pipeline {

torch::Tensor forecast(Bundle& bundle, const torch::Tensor& history, int64_t steps) {
  const Json& manifest = bundle.manifest();
  if (!manifest.contains("window") || !manifest["window"].contains("horizon")) {
    throw BundleError("forecast: a --task " + manifest["task"].get<std::string>() +
                      " bundle; forecasting needs a bundle trained with --task forecast");
  }
  const Json& w = manifest["window"];
  const int64_t length = w["length"].get<int64_t>(), horizon = w["horizon"].get<int64_t>();
  const std::vector<int64_t> targets = w["targets"].get<std::vector<int64_t>>();
  const int64_t quantiles = w.contains("quantiles") ? static_cast<int64_t>(w["quantiles"].size()) : 1;
  const int64_t channels = manifest["input"]["channels"].get<int64_t>();
  const int64_t n_targets = static_cast<int64_t>(targets.size());
  if (history.dim() != 2 || history.size(0) != channels || history.size(1) < length) {
    throw BundleError("history: pass (" + std::to_string(channels) + ", T) samples with T at least the window of " +
                      std::to_string(length));
  }
  if (steps == 0) steps = horizon;
  if (steps < 0) throw BundleError("steps must be a whole number of at least 1");
  if (steps > horizon && n_targets != channels) {
    throw BundleError("steps " + std::to_string(steps) + " is past the horizon of " + std::to_string(horizon) +
                      ": rolling out feeds the forecast back as the next input, which needs every channel to be a "
                      "target (this bundle forecasts " + std::to_string(n_targets) + " of " +
                      std::to_string(channels) + "); ask for at most " + std::to_string(horizon));
  }
  torch::Tensor window = history.narrow(1, history.size(1) - length, length).to(torch::kFloat32).contiguous();
  torch::Tensor index = torch::tensor(targets, torch::kLong);
  std::vector<torch::Tensor> parts;
  for (int64_t done = 0; done < steps; done += horizon) {
    // the first output is the flat forecast (1, T * H * Q), target-major, then step, then quantile
    torch::Tensor raw = bundle.predict(window.unsqueeze(0)).at(0).reshape({n_targets, horizon, quantiles});
    parts.push_back(raw);
    torch::Tensor ahead = torch::empty({channels, horizon}, torch::kFloat32);
    ahead.index_copy_(0, index, raw.select(2, quantiles / 2));  // the median, fed back as the next samples
    torch::Tensor joined = torch::cat({window, ahead}, 1);
    window = joined.narrow(1, joined.size(1) - length, length).contiguous();
  }
  torch::Tensor out = torch::cat(parts, 1).narrow(1, 0, steps);
  return quantiles > 1 ? out : out.select(2, 0);
}

}  // namespace pipeline
