"""`pipeline bench` in quick mode: every row is there and consistent; the target rules; its errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pipeline.bench.report import check_targets, format_report
from pipeline.cli import main
from pipeline.models.build import build_model

ENGINES = ("eager PyTorch", "torch.compile", "TorchScript", "runtime Bundle.predict",  # quick: no AOTInductor
           "runtime session.run", "runtime Bundle.predict int8")
LOOPS = ("tutorial loop", "bare step loop", "pipeline train", "pipeline train --precision fp32")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--quick", "--width", "0.125", "--length", "32", "--batch", "16",
                                       "--threads", "2", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report
    return report


@pytest.mark.slow  # a whole quick bench run
def test_quick_bench_json_has_every_row(quick_report):
    keys = {(r["section"], r["name"], r["metric"]) for r in quick_report["rows"]}
    expected = {("inference", e, m) for e in ENGINES for m in ("latency, batch 1", "throughput, batch 16")}
    expected |= {("training", loop, f"training {model}, batch 64") for loop in LOOPS for model in ("fcn", "simple-cnn")}
    expected |= {("training", "default recipe", f"whole training {model}, 256 series") for model in ("fcn", "simple-cnn")}
    expected |= {("start-up", "torch.compile", "first calls at batch 1 and 16"),
                 ("start-up", "export --format all", "export + verification"),
                 ("start-up", "export --format onnx --quantize int8", "export + verification + int8")}
    expected |= {("memory", "pipeline predict", f"{mib} MiB .npy ({mib * 1024 * 1024 // (4 * 128)} series)")
                 for mib in (16, 32)}
    expected |= {("signature", "runtime.load", "unsigned check (sha256 sums)"),
                 ("signature", "runtime.load, public_key", "signature + sums"),
                 ("signature", "check_signature", "ECDSA + every file's sha256")}
    expected |= {("streaming", name, f"window 128, stride {stride}") for stride in (1, 16, 128)
                 for name in ("Bundle.stream", "Bundle.predict_windows")}
    expected |= {("saliency", name, "throughput, batch 256")
                 for name in ("runtime session.run", "runtime session.run --saliency")}
    expected |= {("forecasting", "Bundle.predict", "throughput, 64 windows"),
                 ("forecasting", "Bundle.predict", "latency, one window"),
                 ("forecasting", "Bundle.forecast", "rollout of 10 horizons")}
    assert keys == expected
    assert len(quick_report["rows"]) == len(expected)
    for row in quick_report["rows"]:
        assert row["value"] > 0 and row["ratio"] > 0, row


@pytest.mark.slow  # a whole quick bench run
def test_ratios_are_against_eager_pytorch_of_the_same_measure(quick_report):
    rows = quick_report["rows"]
    for metric in ("latency, batch 1", "throughput, batch 16"):
        same = {r["name"]: r for r in rows if r["metric"] == metric}
        eager = same["eager PyTorch"]
        assert eager["ratio"] == pytest.approx(1.0)
        for row in same.values():
            # latency: time ratio (lower is faster); throughput: rate ratio (higher is faster)
            assert row["ratio"] == pytest.approx(row["value"] / eager["value"], rel=1e-9)
            assert row["calls"] == (30 if metric.startswith("latency") else 3)
    for model in ("fcn", "simple-cnn"):
        same = {r["name"]: r for r in rows if r["metric"] == f"training {model}, batch 64"}
        assert same["tutorial loop"]["ratio"] == pytest.approx(1.0)
        assert same["pipeline train"]["ratio"] == pytest.approx(same["pipeline train"]["value"]
                                                                / same["tutorial loop"]["value"])
    whole = [r for r in rows if r["name"] == "default recipe"]  # the benchmarked model's first, the others against it
    assert [r["metric"] for r in whole] == ["whole training fcn, 256 series", "whole training simple-cnn, 256 series"]
    assert [r["ratio"] for r in whole] == pytest.approx([1.0, whole[1]["value"] / whole[0]["value"]])
    epoch = {model: 256 / next(r["value"] for r in rows if r["name"] == "pipeline train"
                               and r["metric"] == f"training {model}, batch 64") for model in ("fcn", "simple-cnn")}
    assert whole[0]["value"] > 300 * epoch["fcn"] * 0.5  # the recipe's 300 epochs, projected from the median epoch
    start = {r["name"]: r for r in rows if r["section"] == "start-up"}
    eager_warmup = sum(r["warmup_s"] for r in rows if r["name"] == "eager PyTorch" and r["section"] == "inference")
    for row in start.values():
        assert row["ratio"] == pytest.approx(row["value"] / eager_warmup)
    signature = {r["name"]: r for r in rows if r["section"] == "signature"}
    assert signature["runtime.load"]["ratio"] == 1.0
    for name in ("runtime.load, public_key", "check_signature"):
        assert signature[name]["ratio"] == pytest.approx(signature[name]["value"] / signature["runtime.load"]["value"])
        assert signature[name]["calls"] == 5
    saliency = {r["name"]: r for r in rows if r["section"] == "saliency"}  # time ratios, the plain graph 1.0
    assert saliency["runtime session.run"]["ratio"] == 1.0
    assert saliency["runtime session.run --saliency"]["ratio"] == pytest.approx(
        saliency["runtime session.run"]["value"] / saliency["runtime session.run --saliency"]["value"])
    target = next(t for t in quick_report["targets"] if t["target"].startswith("model graph with saliency"))
    assert target["value"] == saliency["runtime session.run --saliency"]["ratio"] and target["threshold"] == 1.1
    for stride in (1, 16, 128):  # the stream's samples/s against predict_windows of the same recording
        same = {r["name"]: r for r in rows if r["metric"] == f"window 128, stride {stride}"}
        samples = 128 + stride * 199  # 200 windows in quick mode
        assert same["Bundle.predict_windows"]["ratio"] == 1.0
        assert same["Bundle.stream"]["ratio"] == pytest.approx(same["Bundle.stream"]["samples_per_second"]
                                                               / same["Bundle.predict_windows"]["samples_per_second"])
        assert same["Bundle.predict_windows"]["value"] == pytest.approx(
            samples / same["Bundle.predict_windows"]["samples_per_second"] / 200 * 1e3)
    memory = [r for r in rows if r["section"] == "memory"]
    assert memory[0]["ratio"] == pytest.approx(1.0)
    assert memory[1]["ratio"] == pytest.approx(memory[1]["seconds_per_gib"] / memory[0]["seconds_per_gib"])


@pytest.mark.slow  # a whole quick bench run
def test_report_names_the_machine_threads_and_model(quick_report):
    m = quick_report["machine"]
    assert m["threads"] == 2 and m["cpu"] and m["torch"] and m["onnxruntime"] and m["device"] == "cpu"
    model = quick_report["model"]
    # fcn width 0.125 at length 32: convolutions 16x1x8, 32x16x5, 16x32x3 over 32 steps, then a 16x3 head
    assert model["flops_per_series"] == 2 * (16 * 8 + 32 * 16 * 5 + 16 * 32 * 3) * 32 + 2 * 16 * 3
    assert model["gflops"] > 0 and model["int8_gops"] > 0
    text = format_report(quick_report)
    assert text.splitlines()[0].startswith(f"machine: {m['cpu']}; 2 threads for every engine")
    assert "runtime Bundle.predict" in text and "ratio: inference rows against eager PyTorch" in text


def _row(section, name, metric, value, ratio, **extra):
    return {"section": section, "name": name, "metric": metric, "unit": "", "value": value, "ratio": ratio, **extra}


def test_targets_follow_the_issue_rules():
    rows = [_row("inference", "runtime Bundle.predict", "latency, batch 1", 0.4, 0.44),
            _row("inference", "runtime Bundle.predict", "throughput, batch 256", 5000.0, 1.9, gflops=300.0),
            _row("inference", "runtime Bundle.predict int8", "latency, batch 1", 0.25, 0.3),
            _row("inference", "runtime Bundle.predict int8", "throughput, batch 256", 9000.0, 3.4),
            _row("training", "tutorial loop", "training simple-cnn, batch 64", 100.0, 1.0),
            _row("training", "pipeline train", "training simple-cnn, batch 64", 131.0, 1.31),
            _row("training", "tutorial loop", "training fcn, batch 64", 90.0, 1.0),
            _row("training", "bare step loop", "training fcn, batch 64", 100.0, 1.11),
            _row("training", "pipeline train --precision fp32", "training fcn, batch 64", 94.0, 1.04),
            _row("training", "pipeline train", "training fcn, batch 64", 189.0, 2.1),
            _row("memory", "pipeline predict", "256 MiB .npy (x series)", 150.0, 1.0, seconds_per_gib=10.0),
            _row("memory", "pipeline predict", "1024 MiB .npy (x series)", 410.0, 1.3, seconds_per_gib=13.0)]
    report = {"rows": rows, "machine": {"device": "cpu", "native_bf16": None},
              "model": {"model": "fcn", "length": 128, "channels": 1, "classes": 3, "gflops": 400.0,
                        "flops_per_series": 6.0e7}}
    got = {t["target"]: (t["value"], t["met"]) for t in check_targets(report)}
    assert got == {
        "runtime throughput vs eager": (1.9, False),
        "runtime GFLOP/s vs onnxruntime matmul peak": (0.75, True),
        "runtime latency vs eager": (0.44, True),
        "int8 runtime throughput vs fp32 runtime": (1.8, False),
        "int8 runtime latency vs fp32 runtime": (0.625, False),
        "pipeline train vs tutorial loop (simple-cnn)": (1.31, True),
        "pipeline train --precision fp32 vs bare step loop (fcn)": (0.94, False),
        "pipeline predict peak memory (MB)": (410.0, False),
        "predict time per GiB, largest vs smallest file": (1.3, False),
    }
    # where --precision auto trains in bf16, pipeline train (auto) is held to 2x the tutorial loop
    report["machine"]["native_bf16"] = "this CPU has AVX-512 BF16"
    got = {t["target"]: (t["value"], t["met"]) for t in check_targets(report)}
    assert got["pipeline train vs tutorial loop (fcn)"] == (2.1, True)
    report["model"]["length"] = 64  # the inference targets are stated for length 128 only
    assert not any(t["target"].startswith("runtime") for t in check_targets(report))


@pytest.mark.parametrize("args, message", [
    (["--classes", "1"], "Error: --classes must be at least 2; got 1\n"),
    (["--width", "0"], "Error: --width must be > 0; got 0.0\n"),
    (["--length", "0"], "Error: --length must be at least 1; got 0\n"),
])
def test_bad_bench_flags_exit_2_with_one_line(args, message):
    result = CliRunner().invoke(main, ["bench", "--quick", *args])
    assert result.exit_code == 2 and result.output == message


def test_shape_flags_with_a_run_dir_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path), "--width", "0.5", "--length", "64"])
    assert result.exit_code == 2
    assert result.output == (f"Error: {tmp_path} fixes the model to benchmark; --width, --length only apply without "
                             "RUN_DIR\n")


def test_bench_does_not_overwrite_its_out_file_without_force(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("keep")
    result = CliRunner().invoke(main, ["bench", "--quick", "--out", str(out)])
    assert result.exit_code == 2
    assert result.output == f"Error: {out} already exists; pass --force to replace it or choose another --out\n"
    assert out.read_text() == "keep"


def test_an_engine_the_bench_cannot_export_is_one_line_exit_1_and_no_out_file(tmp_path, monkeypatch):
    import pipeline.bench.run as bench_run
    from export.exporters import ExportError

    def refuses(cfg, log):
        raise ExportError("model could not be captured by torch.export: Constraints violated (length)")

    monkeypatch.setattr(bench_run, "run_bench", refuses)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--quick", "--out", str(out)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "Error: model could not be captured by torch.export: Constraints violated (length)\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bench_has_compiled_training_rows_without_recompiles():
    result = CliRunner().invoke(main, ["bench", "--device", "cuda", "--quick", "--width", "0.25", "--no-memory",
                                       "--train-model", "fcn", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["machine"]["gpu"] == torch.cuda.get_device_name(0)
    training = {r["name"]: r for r in report["rows"] if r["section"] == "training"}
    assert set(training) == {*LOOPS, "pipeline train --compile on", "pipeline train --precision bf16",
                             "pipeline train --compile on --precision bf16",
                             "pipeline train --compile on --compile-mode reduce-overhead"}
    for name, row in training.items():
        if "--compile on" in name:
            assert row["compile"]["recompiles_after_epoch_1"] == 0, row
    assert {t["target"] for t in report["targets"]} >= {"CUDA compiled training vs eager (--compile on)",
                                                       "CUDA compiled training vs eager (--compile on --precision bf16)"}


@pytest.mark.slow  # a whole quick bench run
def test_bench_of_a_trained_run_uses_its_model(tmp_path, npz_file):
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    run = train(RunSettings(DataConfig(data=str(npz_file("binary", n=40, length=16)), task="binary", val_split=0.0), LossConfig(),
                ModelConfig(name="resnet", width=0.125), TrainConfig(epochs=1, progress=False)), out=tmp_path / "run",
                log=lambda _: None)
    result = CliRunner().invoke(main, ["bench", str(run.run_dir), "--quick", "--no-memory", "--train-model",
                                       "simple-cnn", "--batch", "8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {k: report["model"][k] for k in ("model", "width", "channels", "length", "classes")} == {
        "model": "resnet", "width": 0.125, "channels": 1, "length": 16, "classes": 2}
    assert {r["metric"] for r in report["rows"] if r["section"] == "training"} == {
        "training simple-cnn, batch 64", "whole training simple-cnn, 256 series"}
    assert {r["name"] for r in report["rows"] if r["section"] == "inference"} == set(ENGINES)
    # the inference targets are stated for fcn at length 128 only; the simple-cnn training target applies, and
    # resnet's saliency output (a map for every model that has one)
    assert [t["target"] for t in report["targets"]] == ["pipeline train vs tutorial loop (simple-cnn)",
                                                        "model graph with saliency vs without (time)",
                                                        "forecast rollout vs as many batch-1 calls (time)"]
    # the model against fcn of the same shape, side by side: FLOPs counted by hand for fcn width 0.125
    # (16/32/16 filters, kernels 8/5/3, length 16, one channel, 2 outputs), parameters by torch
    models = {(r["name"], r["metric"]): r for r in report["rows"] if r["section"] == "models"}
    assert set(models) == {(f"{m} runtime session.run", metric) for m in ("resnet", "fcn")
                           for metric in ("latency, batch 1", "throughput, batch 8")}
    fcn_flops = 2 * 16 * (1 * 8 * 16 + 16 * 5 * 32 + 32 * 3 * 16) + 2 * 16 * 2
    resnet = build_model(ModelConfig(name="resnet", width=0.125, in_channels=1, length=16, n_outputs=1))
    for metric in ("latency, batch 1", "throughput, batch 8"):
        fcn, other = models["fcn runtime session.run", metric], models["resnet runtime session.run", metric]
        assert fcn["flops_per_series"] == fcn_flops and fcn["ratio"] == 1.0
        assert other["params"] == sum(p.numel() for p in resnet.parameters())
        # latency (ms) and throughput (series/s) alike: the ratio is the values' ratio
        assert other["ratio"] == pytest.approx(other["value"] / fcn["value"], rel=1e-9)


# --- the kernel models against aeon ------------------------------------------------------------------------------
def test_aeon_rows_are_ours_beside_aeons_and_their_targets_follow_the_issue():
    from pipeline.bench.peers import comparison_rows

    ours = {"peak_added_mb": 30.0, "seconds": {"1": 0.0005, "64": 0.032, "1024": 0.8}}
    theirs = {"peak_added_mb": 80.0, "seconds": {"1": 0.001, "64": 0.016, "1024": 0.2}}
    rows = comparison_rows("minirocket", 150, ours, theirs, "peer")
    got = {r["metric"]: (r["value"], r["peer"], r["ratio"]) for r in rows}
    assert got == {"latency, batch 1, length 150": (pytest.approx(0.5), pytest.approx(1.0), pytest.approx(0.5)),
                   "throughput, batch 1, length 150": (pytest.approx(2000), pytest.approx(1000), pytest.approx(2.0)),
                   "throughput, batch 64, length 150": (pytest.approx(2000), pytest.approx(4000), pytest.approx(0.5)),
                   "throughput, batch 1024, length 150": (pytest.approx(1280), pytest.approx(5120),
                                                          pytest.approx(0.25)),
                   "peak memory added, 1024 series, length 150": (30.0, 80.0, pytest.approx(0.375))}
    report = {"rows": rows, "machine": {"device": "cpu"}, "model": {"model": "minirocket"}}
    targets = {t["target"]: (t["value"], t["op"], t["threshold"], t["met"]) for t in check_targets(report)}
    assert targets == {
        "minirocket latency, batch 1, length 150 vs aeon": (pytest.approx(0.5), "<=", 1.0, True),
        "minirocket throughput, batch 64, length 150 vs aeon": (pytest.approx(0.5), ">=", 1.0, False),
        "minirocket throughput, batch 1024, length 150 vs aeon": (pytest.approx(0.25), ">=", 1.0, False),
        "minirocket peak memory added, 1024 series, length 150 (MB)": (30.0, "<=", 260.0, True)}
    alone = comparison_rows("hydra", 150, ours, None, "aeon not installed")
    assert all(r["peer"] is None and r["ratio"] is None for r in alone)
    assert not check_targets({"rows": alone, "machine": {"device": "cpu"}, "model": {"model": "hydra"}})


@pytest.mark.slow  # trains, exports and times a minirocket in a child process
def test_the_kernel_bench_measures_the_bundle_in_its_own_process_and_says_when_aeon_is_missing(tmp_path,
                                                                                               monkeypatch):
    from pipeline.bench import peers

    monkeypatch.setattr(peers, "aeon_installed", lambda python: False)
    rows = peers.peer_rows("minirocket", True, tmp_path, lambda _: None)
    assert {r["metric"] for r in rows} == {"latency, batch 1, length 150", "throughput, batch 1, length 150",
                                           "throughput, batch 64, length 150",
                                           "peak memory added, 1024 series, length 150"}
    for r in rows:
        assert (r["section"], r["name"], r["note"], r["peer"], r["ratio"]) == (
            "aeon", "minirocket onnxruntime bundle", "aeon not installed", None, None)
        assert r["value"] >= 0 if r["unit"] == "MB" else r["value"] > 0
    assert peers.peer_rows("fcn", True, tmp_path, lambda _: None) == []


def test_pte_rows_time_executorch_beside_onnxruntime_and_aotinductor_each_in_its_own_process(task_bundles, tmp_path):
    from pipeline.bench.pte import ENGINES, TRAIN_ENGINES, pte_rows
    from pipeline.bench.report import check_targets

    # the AOTInductor child is the same code with another predictor (full bench: pte_rows' default engines)
    rows = pte_rows(task_bundles["multiclass"].run_dir, tmp_path, threads=1, rounds=1, calls=2, batch=8,
                    log=lambda _: None, engines=("onnxruntime", "executorch"))
    assert [(r["name"], r["metric"], r["unit"]) for r in rows] == [
        ("export --format pte", "lowering + verification", "s")] + [
        (ENGINES[e], m, u) for e in ("onnxruntime", "executorch")
        for m, u in (("latency, batch 1", "ms"), ("throughput, batch 8", "series/s"))] + [
        (name, "fine-tuning step (head, SGD), batch 16", "ms") for name in TRAIN_ENGINES.values()]
    assert all(r["section"] == "pte" and r["value"] > 0 for r in rows)
    onnxruntime = [r for r in rows if r["name"] == ENGINES["onnxruntime"]]
    assert [r["ratio"] for r in onnxruntime] == [1.0, 1.0]
    eager_step = rows[-1]
    assert eager_step["ratio"] == 1.0 and rows[-2]["ratio"] == pytest.approx(rows[-2]["value"] / eager_step["value"])
    for r in rows[1:-2]:  # each ratio is this engine's time against onnxruntime's, measured in the same run
        base = next(b for b in onnxruntime if b["metric"] == r["metric"])
        assert r["ratio"] == pytest.approx(r["value"] / base["value"], rel=1e-9)  # time or rate: value over base
    targets = check_targets({"rows": rows, "model": {"model": "fcn"}, "machine": {"device": "cpu"}})
    pte_target = [t for t in targets if t["target"] == "ExecuTorch .pte throughput vs onnxruntime (fcn)"]
    assert pte_target == [{"target": "ExecuTorch .pte throughput vs onnxruntime (fcn)", "value": rows[4]["ratio"],
                           "op": ">=", "threshold": 1.0, "met": rows[4]["ratio"] >= 1.0,
                           "detail": f"{rows[4]['value']:.0f} series/s at throughput, batch 8, each engine in its own "
                                     "process"}]
