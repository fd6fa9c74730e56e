"""Streaming a live recording through a windowed bundle (runtime.windows.Stream via Bundle.stream): every
chunking gives the windows `predict_windows` gives for the whole recording, and both equal eager PyTorch on
windows cut by a plain loop; memory stays flat over a 10-million-sample recording."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from runtime.errors import InputError
from tests.conftest import STRIDE, WINDOW, eager_windows, make_recordings, subprocess_env

pytestmark = pytest.mark.slow  # trains and exports the windowed bundles
ATOL = RTOL = 1e-5
# the same graph on the same windows, batched differently (onnxruntime may vectorise other batch sizes apart)
SAME = 1e-6


def chunk_sizes(total: int):
    """Chunkings of `total` samples: runs of single samples, mid-size chunks and a few very long ones."""
    size = st.one_of(st.integers(1, 3), st.integers(4, 40), st.integers(41, 2 * total))
    return st.lists(size, min_size=1, max_size=60).map(lambda sizes: _cover(sizes, total))


def _cover(sizes: list[int], total: int) -> list[int]:
    out, left = [], total
    for n in sizes:
        if left == 0:
            break
        out.append(min(n, left))
        left -= out[-1]
    return out + ([left] if left else [])


def _push_all(stream, recording: np.ndarray, chunking: list[int]) -> dict:
    parts, at = [], 0
    for n in chunking:
        parts.append(stream.push(recording[:, at:at + n]))
        at += n
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


RECORDING = make_recordings("multiclass", count=1, samples=301, seed=5)[0][0]  # (2, 301): not in training


@pytest.mark.parametrize("task", ("multiclass", "regression"))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunking=chunk_sizes(RECORDING.shape[1]))
def test_stream_equals_windowed_predict_equals_eager_for_any_chunking(windowed_bundles, task, chunking):
    wb = windowed_bundles[task]
    bundle = runtime.load(wb.bundle)
    streamed = _push_all(bundle.stream(), RECORDING, chunking)
    whole = bundle.predict_windows(RECORDING)
    eager = eager_windows(wb.run_dir, RECORDING)
    assert streamed["start"].tolist() == whole["start"].tolist() == eager["start"]
    assert (streamed["end"] - streamed["start"] == WINDOW).all() and np.diff(streamed["start"]).tolist() == \
        [STRIDE] * (len(eager["start"]) - 1)
    for name in bundle.outputs:
        np.testing.assert_allclose(streamed[name], whole[name], atol=SAME, rtol=SAME)  # other batch sizes
        np.testing.assert_allclose(whole[name], eager[name], atol=ATOL, rtol=RTOL)


def test_a_stream_of_one_sample_at_a_time_emits_each_window_when_its_last_sample_arrives(windowed_bundles):
    bundle = runtime.load(windowed_bundles["multiclass"].bundle)
    stream = bundle.stream()
    emitted = [(t, stream.push(RECORDING[:, t:t + 1])["start"].tolist()) for t in range(60)]
    assert [(t, s) for t, s in emitted if s] == [(WINDOW - 1 + k * STRIDE, [k * STRIDE]) for k in range(12)]
    empty = bundle.stream().push(RECORDING[:, :3])
    assert empty["start"].shape == (0,) and empty["probabilities"].shape == (0, 3) and empty["label"].dtype == np.int64


def test_a_bad_chunk_is_refused_in_one_line_and_the_stream_goes_on(windowed_bundles):
    bundle = runtime.load(windowed_bundles["regression"].bundle)
    stream = bundle.stream()
    first = stream.push(RECORDING[:, :40])
    bad = RECORDING[:, 40:50].copy()
    bad[1, 3] = np.nan
    with pytest.raises(InputError) as err:
        stream.push(bad)
    assert str(err.value) == ("chunk: sample 43 of the stream is NaN or Inf; fill gaps before pushing (nothing of "
                              "this chunk was used)")
    with pytest.raises(InputError, match=r"^chunk: has shape \(3, 5\); pass \(2, n\) samples per push$"):
        stream.push(np.zeros((3, 5)))
    rest = stream.push(RECORDING[:, 40:])
    whole = bundle.predict_windows(RECORDING)
    np.testing.assert_allclose(np.concatenate([first["prediction"], rest["prediction"]]), whole["prediction"],
                               atol=SAME, rtol=SAME)


def test_the_runtime_stream_holds_constant_memory_over_ten_million_samples(windowed_bundles, tmp_path):
    """Peak RSS (a subprocess of its own) after 1 million samples and after 10 million: the stream keeps one
    window per channel, so pushing nine million more samples adds nothing that grows with them."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        import numpy as np
        import runtime
        bundle = runtime.load({str(windowed_bundles["regression"].bundle)!r})
        stream = bundle.stream(stride=4099)  # few windows: this measures the stream, not the model
        rng = np.random.default_rng(0)
        chunk = rng.normal(size=(2, 100_000)).astype(np.float32)
        peaks, windows = [], 0
        for i in range(100):
            windows += len(stream.push(chunk)["start"])
            if i in (9, 99):
                peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
        print(json.dumps({{"peaks": peaks, "windows": windows, "seen": stream.seen}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["seen"] == 10_000_000
    assert result["windows"] == len(range(0, 10_000_000 - WINDOW + 1, 4099))
    after_1m, after_10m = result["peaks"]
    # 9 million more float32 samples of 2 channels would be 72 MB if any of them were kept
    assert after_10m - after_1m < 8 * 1024, result


def test_a_bundle_trained_without_windows_is_unchanged_and_streams_windows_of_its_training_length(task_bundles):
    tb = task_bundles["regression"]
    manifest = json.loads((tb.bundle / "manifest.json").read_text())
    assert "window" not in manifest
    bundle = runtime.load(tb.bundle)
    assert bundle.window is None
    recording = np.random.default_rng(3).normal(size=(1, 70)).astype(np.float32)
    length = bundle.series.trained_length  # 16: windows of it, no overlap
    out = bundle.stream().push(recording)
    assert out["start"].tolist() == [0, 16, 32, 48] and out["end"].tolist() == [16, 32, 48, 64]
    cut = np.stack([recording[:, s:s + length] for s in (0, 16, 32, 48)])
    np.testing.assert_allclose(out["prediction"], bundle.predict(cut)["prediction"], atol=SAME, rtol=SAME)


@pytest.mark.hostile
@pytest.mark.parametrize("call, message", [
    (lambda b: b.stream(length=0), "window length must be at least 1 sample; got 0 (leave it out for the bundle's own "
                                   "window)"),
    (lambda b: b.stream(stride=0), "window stride must be at least 1 sample; got 0 (leave it out for the bundle's own "
                                   "window)"),
    (lambda b: b.stream(length=-3), "window length must be at least 1 sample; got -3 (leave it out for the bundle's "
                                    "own window)"),
    (lambda b: b.stream(length=16.5), "window length must be a whole number of samples; got 16.5"),
    (lambda b: b.stream(stride="4"), "window stride must be a whole number of samples; got '4'"),
    (lambda b: b.stream(length=10**12), "window length 1,000,000,000,000 is too long: 2,000,000,000,000 values a "
                                        "window, the most is 134,217,728; pass a shorter length"),
    (lambda b: b.predict_windows(np.zeros((2, 64)), length=0), "window length must be at least 1 sample; got 0 "
                                                                "(leave it out for the bundle's own window)"),
    (lambda b: b.predict_windows([["a", "b"], ["c", "d"]]), "recording: holds <U1 values; pass numbers, (2, samples) "
                                                             "floats"),
    (lambda b: b.predict_windows([[0.0, 1.0], [2.0]]), "recording: not an array of numbers (setting an array element "
                                                       "with a sequence. The requested array has an inhomogeneous "
                                                       "shape after 1 dimensions. The detected shape was (2,) + "
                                                       "inhomogeneous part.); pass (2, samples) floats"),
    (lambda b: b.stream().push([[0.0, 1.0], [2.0]]), "chunk: not an array of numbers (setting an array element with a "
                                                     "sequence. The requested array has an inhomogeneous shape after 1 "
                                                     "dimensions. The detected shape was (2,) + inhomogeneous part.); "
                                                     "pass (2, n) samples per push"),
], ids=["length 0", "stride 0", "negative length", "fractional length", "text stride", "huge length",
        "windows of length 0", "text recording", "ragged recording", "ragged chunk"])
def test_bad_window_settings_and_recordings_are_refused_in_one_line(windowed_bundles, call, message):
    """Never silently the bundle's own window for 0, never numpy's MemoryError or bare ValueError."""
    bundle = runtime.load(windowed_bundles["regression"].bundle)  # two channels, window 16 stride 4
    assert (bundle.series.channels, bundle.window.length, bundle.window.stride) == (2, WINDOW, STRIDE)
    with pytest.raises(InputError) as caught:
        call(bundle)
    assert str(caught.value) == message
    assert len(bundle.stream().push(np.zeros((2, WINDOW), np.float32))["start"]) == 1  # and the bundle goes on
