"""The bench table, and the product's speed targets checked against one run's numbers."""

from __future__ import annotations

# The reference configuration of the inference targets: fcn at length 128, one channel, three classes.
TARGET_SHAPE = {"model": "fcn", "length": 128, "channels": 1, "classes": 3}
RUNTIME = "runtime Bundle.predict"
RUNTIME_INT8 = "runtime Bundle.predict int8"
MEMORY_LIMIT_MB = 400
LINEAR_SLACK = 1.25  # seconds per GiB of the largest file at most this many times the smallest's


def _find(rows: list[dict], section: str, name: str, metric_start: str) -> dict | None:
    return next((r for r in rows if r["section"] == section and r["name"] == name
                 and r["metric"].startswith(metric_start)), None)


def _target(name: str, value: float | None, op: str, threshold: float, detail: str) -> dict:
    met = None if value is None else (value >= threshold if op == ">=" else value <= threshold
                                      if op == "<=" else value < threshold)
    return {"target": name, "value": value, "op": op, "threshold": threshold, "met": met, "detail": detail}


def check_targets(report: dict) -> list[dict]:
    """Each target that this run's configuration can answer, with the measured value and whether it is met."""
    rows, model = report["rows"], report["model"]
    targets = []
    if all(model.get(k) == v for k, v in TARGET_SHAPE.items()):
        throughput = _find(rows, "inference", RUNTIME, "throughput")
        latency = _find(rows, "inference", RUNTIME, "latency")
        if throughput:
            targets.append(_target("runtime throughput vs eager", throughput["ratio"], ">=", 2.0,
                                   f"{throughput['value']:.0f} series/s at {throughput['metric']}"))
            if model.get("gflops"):
                share = throughput["gflops"] / model["gflops"]
                targets.append(_target("runtime GFLOP/s vs onnxruntime matmul peak", share, ">=", 0.75,
                                       f"{throughput['gflops']:.1f} of {model['gflops']:.1f} GFLOP/s "
                                       f"({model['flops_per_series'] / 1e6:.1f} MFLOP per series)"))
        if latency:
            targets.append(_target("runtime latency vs eager", latency["ratio"], "<=", 0.45,
                                   f"{latency['value']:.3f} ms median at batch 1"))
        int8_throughput = _find(rows, "inference", RUNTIME_INT8, "throughput")
        int8_latency = _find(rows, "inference", RUNTIME_INT8, "latency")
        if int8_throughput and throughput:
            targets.append(_target("int8 runtime throughput vs fp32 runtime", int8_throughput["value"]
                                   / throughput["value"], ">=", 2.0, f"{int8_throughput['value']:.0f} vs "
                                   f"{throughput['value']:.0f} series/s at {throughput['metric']}"))
        if int8_latency and latency:
            targets.append(_target("int8 runtime latency vs fp32 runtime", int8_latency["value"] / latency["value"],
                                   "<=", 0.6, f"{int8_latency['value']:.3f} vs {latency['value']:.3f} ms at batch 1"))
    training_targets = [("simple-cnn", "pipeline train", "tutorial loop", 1.3),
                        ("fcn", "pipeline train --precision fp32", "bare step loop", 0.95)]
    if report["machine"].get("native_bf16"):  # --precision auto trains in bf16 here
        training_targets.append(("fcn", "pipeline train", "tutorial loop", 2.0))
    for model_name, loop, base, threshold in training_targets:
        ours = _find(rows, "training", loop, f"training {model_name},")
        reference = _find(rows, "training", base, f"training {model_name},")
        if ours and reference:
            targets.append(_target(f"{loop} vs {base} ({model_name})", ours["value"] / reference["value"],
                                   ">=", threshold, f"{ours['value']:.0f} vs {reference['value']:.0f} series/s"))
    for name in ("--compile on", "--compile on --precision bf16"):
        compiled = _find(rows, "training", f"pipeline train {name}", "training")
        eager_name = "pipeline train" + (" --precision bf16" if "bf16" in name else "")
        eager = _find(rows, "training", eager_name, compiled["metric"] if compiled else "")
        if compiled and eager and report["machine"]["device"] == "cuda":
            targets.append(_target(f"CUDA compiled training vs eager ({name})", compiled["value"] / eager["value"],
                                   ">=", 1.5, compiled["note"]))
    targets += _aeon_targets(rows)
    saliency = _find(rows, "saliency", "runtime session.run --saliency", "throughput")
    if saliency:
        targets.append(_target("model graph with saliency vs without (time)", saliency["ratio"], "<=", 1.1,
                               f"{saliency['value']:.0f} series/s at {saliency['metric']}"))
    pte = _find(rows, "pte", "ExecuTorch model.pte (XNNPACK)", "throughput, batch")
    if pte and pte.get("ratio") is not None and report["model"].get("model") == "fcn":
        targets.append(_target("ExecuTorch .pte throughput vs onnxruntime (fcn)", pte["ratio"], ">=", 1.0,
                               f"{pte['value']:.0f} series/s at {pte['metric']}, each engine in its own process"))
    rollout = _find(rows, "forecasting", "Bundle.forecast", "rollout")
    if rollout:
        targets.append(_target("forecast rollout vs as many batch-1 calls (time)", rollout["ratio"], "<=", 1.5,
                               f"{rollout['value']:.1f} ms for {rollout['metric']}"))
    memory = [r for r in rows if r["section"] == "memory"]
    if memory:
        largest = memory[-1]
        targets.append(_target("pipeline predict peak memory (MB)", largest["value"], "<", MEMORY_LIMIT_MB,
                               f"at {largest['metric']}"))
        targets.append(_target("predict time per GiB, largest vs smallest file", largest["ratio"], "<=",
                               LINEAR_SLACK, f"{largest['seconds_per_gib']:.1f} vs "
                               f"{memory[0]['seconds_per_gib']:.1f} s per GiB"))
    return targets


AEON_THROUGHPUT = {"minirocket": 1.0, "hydra": 0.7, "multirocket-hydra": 0.7}  # ours / aeon's, batch 64 and up


def _aeon_targets(rows: list[dict]) -> list[dict]:
    """The kernel models against aeon (issue: at least aeon's throughput for minirocket, 0.7x for the others,
    batch-1 latency at most aeon's, peak memory at most 2x aeon's + 100 MB)."""
    targets = []
    for r in rows:
        # the targets are the onnxruntime bundle's, against a measured aeon
        if r["section"] != "aeon" or r.get("peer") is None or not r["name"].endswith("onnxruntime bundle"):
            continue
        model = r["name"].split()[0]
        if r["metric"].startswith("throughput") and not r["metric"].startswith("throughput, batch 1,"):
            targets.append(_target(f"{model} {r['metric']} vs aeon", r["ratio"], ">=", AEON_THROUGHPUT[model],
                                   f"{r['value']:.0f} vs {r['peer']:.0f} series/s"))
        elif r["metric"].startswith("latency"):
            targets.append(_target(f"{model} {r['metric']} vs aeon", r["ratio"], "<=", 1.0,
                                   f"{r['value']:.3f} vs {r['peer']:.3f} ms"))
        elif r["metric"].startswith("peak memory"):
            targets.append(_target(f"{model} {r['metric']} (MB)", r["value"], "<=", 2 * r["peer"] + 100,
                                   f"aeon's {r['peer']:.0f} MB: at most 2x + 100"))
    return targets


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 1 else f"{value:.3f}"


def format_report(report: dict) -> str:
    """The table users read: one line per row, its ratio column, then the targets."""
    m = report["machine"]
    model = report["model"]
    lines = [f"machine: {m['cpu']}" + (f" + {m['gpu']}" if m["gpu"] else "") +
             f"; {m['threads']} threads for every engine (of {m['cpus_available']} CPUs); torch {m['torch']}, "
             f"onnxruntime {m['onnxruntime']}; {report['mode']} mode",
             f"model: {model['model']} width {model['width']}, {model['channels']} channel(s), length "
             f"{model['length']}, {model['classes']} outputs; {model['flops_per_series'] / 1e6:.1f} MFLOP per series"
             + (f"; onnxruntime fp32 matmul peak here {model['gflops']:.1f} GFLOP/s (n={model['n']})"
                if model.get("gflops") else "")
             + (f", int8 matmul peak {model['int8_gops']:.1f} GOP/s (n={model['int8_n']})"
                if model.get("int8_gops") else "")
             + (f"; --precision auto trains in bf16 ({m['native_bf16']})" if m.get("native_bf16") else "")]
    header = ("section", "engine / loop", "measure", "median", "p90", "unit", "ratio", "warm-up s", "note")
    table = [header]
    for r in report["rows"]:
        note = r.get("note", "")
        if r.get("gflops"):
            note = f"{r['gflops']:.1f} GFLOP/s; {note}"
        if r["section"] == "memory":
            note = f"{r['seconds']:.1f} s, {r['seconds_per_gib']:.1f} s/GiB; {note}"
        if r["section"] == "aeon" and r.get("peer") is not None:
            note = f"aeon {_number(r['peer'])} {r['unit']}; {note}"
        table.append((r["section"], r["name"], r["metric"], _number(r["value"]), _number(r.get("p90")), r["unit"],
                      f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-",
                      _number(r.get("warmup_s")), note))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    lines.append("ratio: inference rows against eager PyTorch of the same measure (latency: time ratio, lower is "
                 "faster; throughput: rate ratio, higher is faster); training rows against the tutorial loop (default recipe rows: against the benchmarked model's whole training); "
                 "start-up rows against eager's warm-up; models rows against fcn of the same shape (same measures); memory rows: "
                 "time per GiB against the smallest file; signature rows: time against runtime.load without a key; aeon rows: "
                 "the onnxruntime bundle against aeon's classifier fitted on the same series (throughput: rate ratio, "
                 "higher is faster; latency and memory: ours over aeon's, lower is better)")
    if report["targets"]:
        lines.append("targets:")
        for t in report["targets"]:
            status = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            lines.append(f"  {status:<6} {t['target']}: {_number(t['value'])} {t['op']} {t['threshold']:g} "
                         f"({t['detail']})")
    return "\n".join(lines)
