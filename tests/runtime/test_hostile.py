"""Hostile input, thrown at random: every case ends in a result or in our own one-line error, never in an
onnxruntime crash, another exception type, or a traceback at the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.data.readers import read_series
from pipeline.errors import DataError
from runtime import InputError
from runtime.inputs import DEFAULT_MAX_LENGTH

DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool", "complex64", "object", "<U3"]
LENGTHS = [0, 1, 2, 7, 16, 33, 1000, DEFAULT_MAX_LENGTH + 1]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def arrays(draw, max_rank=4):
    """Arrays of any rank, small or huge last axis, any dtype, with NaN/Inf sometimes planted."""
    rank = draw(st.integers(0, max_rank))
    shape = [draw(st.integers(0, 4)) for _ in range(rank)]
    if rank:
        shape[-1] = draw(st.sampled_from(LENGTHS))
    if int(np.prod(shape)) > 4 * (DEFAULT_MAX_LENGTH + 1):  # keep memory small: few rows of a huge length
        shape = [1] * (rank - 1) + [shape[-1]]
    dtype = draw(st.sampled_from(DTYPES))
    if dtype == "object":
        return np.array([None] * int(np.prod(shape)), dtype=object).reshape(shape)
    if dtype == "<U3":
        return np.full(shape, "abc")
    values = np.zeros(shape, dtype=dtype)
    if values.size and np.dtype(dtype).kind in "fc" and draw(st.booleans()):
        values.reshape(-1)[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return values


def _valid_series(x: np.ndarray, channels: int, fixed: int | None) -> bool:
    if x.dtype.kind not in "iuf" or x.ndim not in (2, 3) or x.shape[0] == 0:
        return False
    if x.ndim == 2 and channels != 1:
        return False
    c, length = (1, x.shape[1]) if x.ndim == 2 else x.shape[1:]
    ok_length = length == fixed if fixed is not None else 1 <= length <= DEFAULT_MAX_LENGTH
    with np.errstate(over="ignore"):
        finite = np.isfinite(x.astype(np.float32)).all()
    return c == channels and ok_length and bool(finite)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_predict_answers_any_array_with_outputs_or_an_input_error(task_bundles, task):
    import runtime

    bundle = runtime.load(task_bundles[task].bundle)

    @SETTINGS
    @given(x=arrays())
    def check(x):
        valid = _valid_series(x, bundle.series.channels, bundle.series.fixed)
        try:
            outputs = bundle.predict(x)
        except InputError as exc:
            assert not valid, f"refused a valid input: {exc}"
            assert "\n" not in str(exc) and str(exc).startswith("x: ")
            return
        assert valid, f"accepted {x.dtype} {x.shape}"
        first = outputs[bundle.outputs[0]]
        assert first.shape == (x.shape[0], bundle.n_outputs) and np.isfinite(first).all()

    check()


def test_loss_answers_any_prediction_and_target_with_a_value_or_an_input_error(task_bundles):
    import runtime

    bundle = runtime.load(task_bundles["multiclass"].bundle)

    @SETTINGS
    @given(prediction=arrays(max_rank=3), target=arrays(max_rank=2))
    def check(prediction, target):
        try:
            loss, per_sample = bundle.loss(prediction, target)
        except InputError as exc:
            assert "\n" not in str(exc)
            return
        assert np.isfinite(loss) or not np.isfinite(prediction.astype(np.float64)).all()
        assert per_sample.shape == (len(prediction),)

    check()


SUFFIXES = [".csv", ".tsv", ".ts", ".npz", ".npy"]
TOKENS = [*"0123456789.,;:\t -eEnaN@#\n", "@data\n", "@classLabel true a b\n", "@problemName x\n", "x,y\n",
          "1,2,a\n", "1:2\n", "\x00"]
TEXT = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


NPY_HEADER = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4, 1, 8), }"


@SETTINGS
@given(suffix=st.sampled_from(SUFFIXES), labels=st.booleans(),
       body=st.one_of(TEXT.map(str.encode), st.binary(max_size=200),
                      st.binary(max_size=100).map(lambda tail: NPY_HEADER.ljust(128, b" ")[:127] + b"\n" + tail)))
def test_readers_answer_any_file_with_series_or_a_data_error(tmp_path_factory, suffix, labels, body):
    path = tmp_path_factory.mktemp("hostile") / f"data{suffix}"
    path.write_bytes(body)
    try:
        data = read_series(path, labels=labels)
    except DataError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
        assert all(p.startswith(path.name) or p.startswith(str(path)) for p in exc.problems), exc.problems
        return
    assert data.X.ndim == 3 and data.X.dtype.kind in "iuf"
    assert len(data.y) == len(data.X) if labels else data.y is None


@SETTINGS
@given(suffix=st.sampled_from(SUFFIXES), body=TEXT.map(str.encode))
def test_the_cli_never_shows_a_traceback_for_a_bad_file(tmp_path_factory, suffix, body):
    folder = tmp_path_factory.mktemp("cli")
    path = folder / f"data{suffix}"
    path.write_bytes(body)
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--epochs", "1", "--model", "linear",
                                       "--out", str(folder / "run"), "--no-progress"])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        assert result.exit_code == 2 and result.output.startswith("Error: ") and path.name in result.output
