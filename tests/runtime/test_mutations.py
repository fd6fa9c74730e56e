"""Every file a host parses, mutated by hypothesis: each field of manifest.json, model.sig, golden.json and
verification.json removed, replaced by each JSON type, nested one level deeper, or made a huge string. Every host
(Python's `pipeline verify`, the Node kit, the browser page in headless Chromium, the C++ kit) answers each
mutated bundle with one line naming the file and exit status 2, or runs it (exit 0 or 1, the golden check): never
a traceback or a stack trace. A signed bundle (checked with its key) is refused whatever was changed, except the
fields no signature covers and no host reads, and every host agrees with Python bundle by bundle. Unsigned (the
manifest's sums made to match, as a writer of the folder can): refused exactly where Python refuses it (but the
entries of files only one engine reads), a malformed golden.json in the same words in every kit."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from tests.runtime.test_hosts import (_browser_many, _cpp, _node_many, browser_kit, cpp_selfcheck,  # noqa: F401
                                     kits, node_host)

pytestmark = [pytest.mark.slow, pytest.mark.hostile]  # builds every kit; one run of each host over every bundle

FILES = ("manifest.json", "model.sig", "golden.json", "verification.json")
HUGE = "x" * 200_000
# model.sig fields no signature covers and no host needs: changing them (or removing the optional key hint) may
# be accepted, by every host alike
UNREAD = (("verificationMaterial",), ("verificationMaterial", "publicKey"), ("verificationMaterial", "publicKey", "hint"),
          ("verificationMaterial", "tlogEntries"), ("dsseEnvelope", "signatures", 0, "keyid"))
PER_RUN = 12  # mutated bundles per hypothesis example (each host runs them all, the browser in one session)
# manifest fields of the files one engine reads (C++ TorchScript or AOTInductor, Python's torch re-check): a kit
# that does not run that engine rightly ignores them
ENGINE_FIELDS = ("files", "torch_export")
LAYOUT = "not in the golden.json layout ("  # what follows it is the same in every kit


def _paths(value, here=()) -> list[tuple]:
    """Every place in a JSON document (the first 3 items of a list), depth first."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value[:3]) if isinstance(value, list) else ()
    for key, item in items:
        out.append((*here, key))
        out += _paths(item, (*here, key))
    return out


def _mutate(doc, path: tuple, op: str):
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if op == "remove":
        del parent[key]
    elif op == "nest":
        parent[key] = [parent[key]] if isinstance(parent[key], dict) else {"value": parent[key]}
    elif op == "huge":
        parent[key] = HUGE
    else:
        parent[key] = {"null": None, "true": True, "zero": 0, "minus": -1, "half": 0.5, "text": "text", "list": [],
                       "object": {}, "big": 10 ** 30}[op]


OPS = ("remove", "nest", "huge", "null", "true", "zero", "minus", "half", "text", "list", "object", "big")


@st.composite
def mutations(draw, documents: dict):
    name = draw(st.sampled_from(sorted(documents)))
    path = draw(st.sampled_from(_paths(documents[name])))
    return name, path, draw(st.sampled_from(OPS))


def _rehash(folder: Path, name: str) -> None:
    """manifest.json's size and sha256 of `name` made to match its new bytes (what a writer of the folder can do
    to an unsigned bundle): the mutated file's own parser is reached."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if name in manifest.get("files", {}):
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        (folder / "manifest.json").write_text(json.dumps(manifest))


def _python(folder: Path, key: Path | None):
    args = ["verify", str(folder)] + (["--public-key", str(key)] if key else [])
    result = CliRunner().invoke(main, args)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return (-1 if crashed else result.exit_code), result.output + (repr(result.exception) if crashed else "")


def _one_line_refusal(said: str, name: str) -> bool:
    """One line, 'Error: ' and the file's name first in it, short, with no stack trace."""
    lines = said.strip().splitlines()
    return (len(lines) == 1 and lines[0].startswith("Error: ") and name in lines[0][:300] and len(lines[0]) < 2000
            and "Traceback" not in said and "    at " not in said)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_every_host_refuses_or_runs_each_mutated_file_in_one_line(signed, data, kits, task_bundles, signed_bundles,
                                                                   keys, tmp_path_factory):
    source = signed_bundles["regression"] if signed else task_bundles["regression"].bundle
    documents = {name: json.loads((source / name).read_text()) for name in FILES if (source / name).exists()}
    if not signed:
        documents.pop("model.sig", None)
    drawn = data.draw(st.lists(mutations(documents), min_size=PER_RUN, max_size=PER_RUN,
                               unique_by=lambda m: (m[0], m[1], m[2])))
    root = tmp_path_factory.mktemp("mutated")
    folders = []
    for i, (name, path, op) in enumerate(drawn):
        folder = Path(shutil.copytree(source, root / f"b{i}"))
        doc = json.loads((folder / name).read_text())
        _mutate(doc, path, op)
        (folder / name).write_text(json.dumps(doc))
        if not signed:
            _rehash(folder, name)
        folders.append(folder)
    key = keys.public() if signed else None
    said = {"python": [_python(f, key) for f in folders],
            "node": _node_many(kits["node"], folders, key),
            "cpp": [(r.returncode, r.stderr) for r in (_cpp(kits["cpp"], f, *(["--public-key", key] if key else []))
                                                       for f in folders)],
            "browser": _browser_many(kits["browser"], folders, key)}
    for i, (name, path, op) in enumerate(drawn):
        case = f"{name} {'.'.join(map(str, path))} {op}"
        python_code = said["python"][i][0]
        for host, results in said.items():
            code, text = results[i]
            assert code in (0, 1, 2), (host, case, text[-2000:])
            if code == 2:  # signed: the changed file is named; unsigned: the file whose check failed
                assert _one_line_refusal(text, name if signed else ".json"), (host, case, text[-2000:])
            if signed:  # refused whatever changed (bar the unread fields)
                assert code == 2 or path in UNREAD, (host, case, "accepted a changed signed bundle", text[-500:])
            if signed or path[0] not in ENGINE_FIELDS:  # refused exactly where Python refuses it
                assert (code == 2) == (python_code == 2), (host, case, "refused where Python ran it, or the reverse",
                                                          said["python"][i][1][-500:], text[-500:])
        details = {host: results[i][1].partition(LAYOUT)[2].strip() for host, results in said.items()}
        if name == "golden.json" and all(details.values()):  # and in the same words
            assert len(set(details.values())) == 1, (case, details)
