"""Forecasting, defined once (numpy only): the layout of a forecast, its metrics, the naive baselines scored on
the same windows, and the rollout past the horizon. Training, `pipeline evaluate`, the runtime's
`Bundle.forecast` and the docs' metrics table all read these.

Layout. A forecasting model sees a window (batch, channels, W) and predicts the next H samples of its target
channels. Its raw output (the loss graph's `prediction`) is flat, (batch, T * H * Q): target-major, then step,
then quantile (ascending; Q = 1 for a point forecast); the named output `forecast` is the same numbers as
(batch, T, H) or (batch, T, H, Q). Quantiles hold 0.5 in the middle (as many below as above), so the median
is quantile index Q // 2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FORECAST_METRICS = ("mae", "rmse", "smape", "mase")


def median_index(q: int) -> int:
    return q // 2


def check_quantiles(quantiles) -> str | None:
    """Why `quantiles` cannot be a forecast's quantiles, or None: each in (0, 1), increasing, 0.5 in the middle."""
    qs = list(quantiles)
    if not qs:
        return "give at least one quantile"
    if any(not 0.0 < q < 1.0 for q in qs):
        return "each must lie strictly between 0 and 1"
    if any(b <= a for a, b in zip(qs, qs[1:])):
        return "they must increase (e.g. 0.1,0.5,0.9)"
    if len(qs) % 2 == 0 or qs[len(qs) // 2] != 0.5:
        return "0.5 must be the middle one, with as many below it as above (e.g. 0.1,0.5,0.9)"
    return None


def quantiles_of(raw: np.ndarray, target_width: int) -> np.ndarray:
    """(N, T * H, Q) from a raw output (N, T * H * Q)."""
    raw = np.asarray(raw)
    return raw.reshape(len(raw), target_width, raw.shape[1] // target_width)


def median_of(raw: np.ndarray, target_width: int) -> np.ndarray:
    """The point (median) forecast (N, T * H) of a raw output (N, T * H * Q)."""
    q = quantiles_of(raw, target_width)
    return q[:, :, median_index(q.shape[2])]


def _smape(prediction: np.ndarray, target: np.ndarray) -> float:
    """Symmetric MAPE in percent, 200 |e| / (|y| + |f|), a step with both zero counting 0."""
    denominator = np.abs(target) + np.abs(prediction)
    ratio = np.where(denominator > 0, 2.0 * np.abs(prediction - target) / np.where(denominator > 0, denominator, 1),
                     0.0)
    return float(100.0 * ratio.mean())


def point_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and sMAPE of point forecasts against targets, both (N, T * H)."""
    err = prediction - target
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "smape": _smape(prediction, target)}


def forecast_metrics(raw: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The training progress metrics (runtime.tasks): those of the median forecast; MASE needs the windows and
    is in `report`."""
    target = np.asarray(target, dtype=np.float64)
    return point_metrics(median_of(raw, target.shape[1]), target)


# --- baselines and the report (these need the windows' history) ------------------------------------------
def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last value repeated: (N, T, W) history -> (N, T, H)."""
    return np.repeat(history[:, :, -1:], horizon, axis=2)


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The last season repeated: step h forecasts the value `season` steps before it (its last seen copy)."""
    steps = np.arange(horizon)
    back = season - (steps % season)  # how far before the end of the window the copy of step h lies
    return history[:, :, history.shape[2] - back]


def mase_scale(history: np.ndarray, season: int) -> np.ndarray:
    """(N, T): the mean absolute error of the in-sample seasonal-naive forecast over each window's history."""
    diffs = np.abs(history[:, :, season:] - history[:, :, :-season])
    return diffs.mean(axis=2)


def pinball(quantile_forecasts: np.ndarray, target: np.ndarray, quantiles) -> float:
    """Mean pinball loss over quantiles: (N, T * H, Q) against (N, T * H)."""
    q = np.asarray(quantiles, dtype=np.float64)
    diff = target[:, :, None] - quantile_forecasts
    return float(np.maximum(q * diff, (q - 1.0) * diff).mean())


def report(history: np.ndarray, raw: np.ndarray, target: np.ndarray, horizon: int, season: int,
           quantiles=()) -> dict[str, dict[str, float]]:
    """Metrics of the model and of the naive and seasonal-naive forecasts on the same windows.

    history: (N, T, W) the target channels of each window; raw: the model's (N, T * H * Q); target (N, T * H).
    MASE divides each window's absolute error by its own history's seasonal-naive error (windows whose history
    is constant are left out of MASE)."""
    history, target = np.asarray(history, dtype=np.float64), np.asarray(target, dtype=np.float64)
    n, t = history.shape[:2]
    scale = mase_scale(history, season)  # (N, T)
    usable = scale > 0
    rows = {}
    forecasts = {"model": median_of(np.asarray(raw, dtype=np.float64), target.shape[1]),
                 "naive": naive(history, horizon).reshape(n, -1),
                 "seasonal_naive": seasonal_naive(history, horizon, season).reshape(n, -1)}
    for name, forecast in forecasts.items():
        row = point_metrics(forecast, target)
        err = np.abs(forecast - target).reshape(n, t, horizon).mean(axis=2)  # (N, T)
        row["mase"] = float((err[usable] / scale[usable]).mean()) if usable.any() else float("nan")
        rows[name] = row
    if len(quantiles) > 1:
        qf = quantiles_of(np.asarray(raw, dtype=np.float64), target.shape[1])
        rows["model"]["pinball"] = pinball(qf, target, quantiles)
        for i in range(len(quantiles) // 2):
            low, high = quantiles[i], quantiles[len(quantiles) - 1 - i]
            inside = (qf[:, :, i] <= target) & (target <= qf[:, :, len(quantiles) - 1 - i])
            rows["model"][f"coverage_{low:g}_{high:g}"] = float(inside.mean())
    return rows


def report_text(rows: dict[str, dict[str, float]]) -> list[str]:
    """The report as aligned lines: one row per forecaster, one column per metric."""
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    width = {c: max(len(c), 9) + 2 for c in columns}
    lines = [f"{'':16}" + "".join(f"{c:>{width[c]}}" for c in columns)]
    for name, row in rows.items():
        lines.append(f"{name:16}" + "".join(f"{row[c]:>{width[c]}.5g}" if c in row else " " * width[c]
                                            for c in columns).rstrip())
    return lines


def rollout(run: Callable[[np.ndarray], np.ndarray], history: np.ndarray, steps: int, horizon: int,
            targets: list[int], quantiles: int) -> np.ndarray:
    """Forecast `steps` samples past one window `history` (C, W) when every channel is a target (channel
    targets[i] is forecast i): the model's median forecast of H steps is appended to the history and the window
    slides on, until `steps` are forecast. `run` maps (1, C, W) windows to raw outputs (1, T * H * Q).
    Returns (T, steps, Q)."""
    window = np.array(history, dtype=np.float32)
    length = window.shape[1]
    parts = []
    done = 0
    while done < steps:
        raw = np.asarray(run(window[None]))[0].reshape(len(targets), horizon, quantiles)
        parts.append(raw)
        ahead = np.empty((window.shape[0], horizon), dtype=np.float32)
        ahead[targets] = raw[:, :, median_index(quantiles)]
        window = np.concatenate([window, ahead], axis=1)[:, -length:]
        done += horizon
    return np.concatenate(parts, axis=1)[:, :steps]
