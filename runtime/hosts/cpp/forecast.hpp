// A forecasting bundle's rollout (the runtime's Bundle.forecast, runtime/forecast.py, in C++): the next `steps`
// samples after the last window of one recording's history. Past the manifest's window.horizon, when every
// channel is a target, the median forecast is appended to the history and the model forecasts again from the
// window that ends with it.
//
//   torch::Tensor ahead = pipeline::forecast(bundle, history, steps);  // history: float32 (channels, samples)
//   // ahead: (targets, steps) for a point forecast, (targets, steps, quantiles) for a quantile one
#pragma once
#include <torch/script.h>

#include <cstdint>

#include "bundle.hpp"

namespace pipeline {

// steps 0: the horizon. A BundleError for a bundle that does not forecast, a history shorter than the window,
// or steps past the horizon when some channel is an input only.
torch::Tensor forecast(Bundle& bundle, const torch::Tensor& history, int64_t steps = 0);

}  // namespace pipeline
