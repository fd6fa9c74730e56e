"""The hostile tier end to end: every command, as a user types it, with one of its flags (or its argument) given
a bad value that hypothesis picks for that flag's type (negative, zero, NaN, infinite, huge, empty, text where a
number goes, a missing path, a folder where a file goes, a file of junk). Each run either works or ends in our
own one-line error (exit 2; an export that fails its checks, exit 1), under 3,000 characters whatever value was
echoed: never a traceback, and never an exception other than click's own exit. So a new code path placed before
an existing check is caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main

pytestmark = [pytest.mark.hostile, pytest.mark.slow]  # some bad values are valid ones: those runs train or export

NUMBERS = {click.INT: ["-1", "0", "2.5", "abc", ""], click.FLOAT: ["-1", "0", "nan", "inf", "1e400", "abc", ""]}
TEXT = ["", " ", "nope", "a,,b", "x" * 5000, "-1", "nan"]
PATHS = ["", "missing/nowhere", "FOLDER", "JUNK"]  # FOLDER and JUNK: made in the example's own folder


def _values(param: click.Parameter) -> list[str]:
    if isinstance(param.type, (click.types.IntParamType, click.types.IntRange)):
        return NUMBERS[click.INT]
    if isinstance(param.type, (click.types.FloatParamType, click.types.FloatRange)):
        return NUMBERS[click.FLOAT]
    if isinstance(param.type, click.Path):
        return PATHS
    return TEXT  # strings and choices


def _base(command: str, shared: dict, here: Path) -> list[str]:
    """A cheap valid invocation of `command` on the regression bundle and its run (copies: commands write)."""
    run = Path(shutil.copytree(shared["run"], here / "run"))
    bundle = Path(shutil.copytree(shared["bundle"], here / "bundle"))
    data = str(shared["data"])
    return {
        "train": ["train", "--data", data, "--task", "regression", "--model", "linear", "--epochs", "1", "--out",
                  str(here / "new"), "--no-progress"],
        "export": ["export", str(run), "--format", "onnx", "--out", str(here / "exported")],
        "predict": ["predict", str(bundle), "--data", data, "--out", str(here / "p.csv")],
        "evaluate": ["evaluate", str(bundle), "--data", data],
        "verify": ["verify", str(bundle)],
        "bench": ["bench", "--quick", "--model", "linear", "--train-model", "linear", "--train-batch", "2",
                  "--threads", "1", "--width", "0.125", "--length", "32", "--batch", "2", "--no-memory", "--out",
                  str(here / "bench.json")],
        "sign": ["sign", str(bundle), "--key", str(shared["key"])],
        "keygen": ["keygen", str(here / "k")],
    }[command]


def _with(args: list[str], param: click.Parameter, value: str) -> list[str]:
    """`args` with `param` set to `value`: its argument replaced, or its flag's value replaced or added."""
    if isinstance(param, click.Argument):
        return [args[0], value, *args[2:]]
    flag = param.opts[0]
    if flag in args:
        i = args.index(flag)
        return [*args[:i + 1], value, *args[i + 2:]]
    return [*args, flag, value]


@pytest.fixture(scope="module")
def shared(task_bundles, keys, tmp_path_factory) -> dict:
    tb = task_bundles["regression"]
    return {"run": tb.run_dir, "bundle": tb.bundle, "data": tb.test_file, "key": keys.private()}


CHOICES = [(name, param) for name, command in sorted(main.commands.items()) for param in command.params
           if not getattr(param, "is_flag", False) and param.name not in ("help",)]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_answers_a_bad_value_of_any_flag_in_one_line(shared, tmp_path_factory, data):
    name, param = data.draw(st.sampled_from(CHOICES), label="flag")
    value = data.draw(st.sampled_from(_values(param)), label="value")
    here = tmp_path_factory.mktemp("hostile")
    (here / "FOLDER").mkdir()
    (here / "JUNK").write_bytes(b"\x00\xff not a file of ours \x93NUMPY\n")
    # paths resolve in the example's own folder: a command that writes there (keygen's missing/nowhere) leaves
    # nothing in the working folder
    value = str(here / value) if value in ("FOLDER", "JUNK", "missing/nowhere") else value
    args = _with(_base(name, shared, here), param, value)
    result = CliRunner().invoke(main, args)
    shown = " ".join(a if len(a) < 60 else a[:20] + "..." for a in args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (shown, repr(result.exception))
    assert "Traceback" not in result.output, shown
    assert result.exit_code in (0, 1, 2), (shown, result.exit_code, result.output[-2000:])
    lines = result.output.strip().splitlines()
    if result.exit_code == 2:  # ours, or click's usage error: the last line is the one that says why
        assert lines[-1].startswith("Error: ") and len(lines[-1]) < 3000, (shown, result.output[-2000:])
    if result.exit_code == 1:  # an export that failed its checks: its Error line, then the rows that failed
        assert any(line.startswith("Error: ") for line in lines), (shown, result.output[-2000:])
