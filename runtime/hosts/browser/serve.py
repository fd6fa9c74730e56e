"""Serve the browser kit with a bundle on 127.0.0.1 (Python standard library only).

    python runtime/hosts/browser/serve.py BUNDLE_DIR            # open the printed address, paste a series
    python runtime/hosts/browser/serve.py BUNDLE_DIR --check    # headless chromium runs the golden data
    python runtime/hosts/browser/serve.py BUNDLE_DIR --check --cases cases.json
    python runtime/hosts/browser/serve.py BUNDLE_DIR --check --precision int8   # model.int8.onnx
    python runtime/hosts/browser/serve.py BUNDLE_DIR --check --public-key signing.pub.pem   # signed bundles only
    python runtime/hosts/browser/serve.py BUNDLE_DIR --play recording.csv   # the live view plays it; prints JSON
    python runtime/hosts/browser/serve.py A B C --check [--json]   # several bundles, one line (JSON line) each

--check prints one line per graph output with its max differences and exits 1 on a mismatch, 2 when
the page could not load the bundle or no report came back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KIT = Path(__file__).resolve().parent
ORT_DIST = KIT / "node_modules" / "onnxruntime-web" / "dist"
SHARED_JS = KIT.parent / "js"  # bundle-core.js, the bundle implementation shared with the Node.js kit
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


class Handler(SimpleHTTPRequestHandler):
    """/ the kit, /ort/ onnxruntime-web, /js/ the shared bundle code, /bundle/ the bundle, /cases.json the cases,
    POST /report."""

    routes: dict[str, Path] = {}
    public_key: str | None = None  # the URL of the trusted public key, when --public-key is given
    reports: list = []
    reported = threading.Event()

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0]
        for prefix, folder in self.routes.items():
            if clean.startswith(prefix):
                return str(folder / clean[len(prefix):])
        return super().translate_path(path)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reports.append(json.loads(body))
        self.send_response(204)
        self.end_headers()
        self.reported.set()

    def do_GET(self):
        if self.path.split("?", 1)[0] == "/favicon.ico":  # the browser asks for one; there is none to send
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):  # quiet: the check prints its own lines
        pass


class QuietServer(ThreadingHTTPServer):
    """The kit's server: a browser that closes a connection mid-answer (the page quitting as its last requests
    are answered) is not an error to print; anything else is printed as socketserver does."""

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipeError, ConnectionResetError, ...
            return
        super().handle_error(request, client_address)


def not_regular(folder: Path) -> str | None:
    """The refusal of a bundle folder holding a symbolic link, a FIFO, a socket or a device anywhere, or a folder
    where manifest.json lists a file (the words of the runtime and the other kits), or None. Checked before the
    folder is served: a page cannot tell a served link from a file, and reading a FIFO would hang the server."""
    def refused(path: Path, kind: str) -> str:
        return (f"{path}: is {kind}; a bundle holds regular files only, so it is refused (copy the file itself into "
                "the bundle, or re-export it)")

    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            return refused(path, "a symbolic link")
        if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
            return refused(path, "not a regular file (a FIFO, socket or device)")
    try:
        listed = json.loads((folder / "manifest.json").read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return None  # the page reports a missing or broken manifest in its own words
    for name in sorted(listed) if isinstance(listed, dict) else ():
        if (folder / name).is_dir():
            return refused(folder / name, "a folder")
    return None


def serve(bundle: Path | list[Path], cases: Path | None, public_key: Path | None = None,
          recording: Path | None = None) -> ThreadingHTTPServer:
    """The kit, and the bundle at /bundle/ (several bundles: each at /bundle/0/, /bundle/1/, ...)."""
    if not (ORT_DIST / "ort.min.js").exists():
        sys.exit(f"onnxruntime-web is not installed; run: cd {KIT} && npm ci")
    Handler.routes = {"/ort/": ORT_DIST, "/js/": SHARED_JS}
    if isinstance(bundle, list):  # longest prefixes first: /bundle/10/ before /bundle/1/
        for i in sorted(range(len(bundle)), key=lambda i: -len(str(i))):
            Handler.routes[f"/bundle/{i}/"] = bundle[i].resolve()
    else:
        Handler.routes["/bundle/"] = bundle.resolve()
    if cases is not None:
        Handler.routes["/cases.json"] = cases.resolve()
    if recording is not None:
        Handler.routes["/recording.csv"] = recording.resolve()
    if public_key is not None:
        Handler.routes["/public_key/"] = public_key.resolve().parent
        Handler.public_key = f"/public_key/{public_key.name}"
    server = QuietServer(("127.0.0.1", 0), partial(Handler, directory=str(KIT)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check(server: ThreadingHTTPServer, cases: bool, timeout: float, precision: str = "fp32", play: bool = False,
          many: list[Path] | None = None, as_json: bool = False, refused: list[str | None] | None = None) -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium is not installed; Debian: apt-get install chromium", file=sys.stderr)
        return 2
    if many and all(refused):
        Handler.reports.append({"many": []})
        Handler.reported.set()
    port = server.server_address[1]
    url = (f"http://127.0.0.1:{port}/index.html?report=/report&precision={precision}"
           + ("&play=/recording.csv" if play else f"&bundles={sum(not r for r in refused)}" if many
              else "&selfcheck=1")
           + ("&cases=/cases.json" if cases else "")
           + (f"&publicKey={Handler.public_key}" if Handler.public_key else ""))
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        arrived = Handler.reported.is_set()  # nothing to load: every folder was refused
        if not arrived:
            # its own process group, so the renderer and GPU helper processes go down with it
            proc = subprocess.Popen([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                arrived = Handler.reported.wait(timeout)
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if not arrived:
        print(f"no report from the page within {timeout:g} s", file=sys.stderr)
        return 2
    result = Handler.reports[0]
    if many:  # one line per bundle (a JSON line with --json), the worst exit status
        worst = 0
        pages = iter(result["many"])
        for folder, problem in zip(many, refused):
            one = {"error": problem} if problem else next(pages)
            bad = sum(not r["ok"] for r in one.get("rows", []))
            code = 2 if "error" in one else 1 if bad else 0
            said = (f"Error: {one['error']}" if code == 2 else f"{bad} output(s) differ beyond atol/rtol" if bad
                    else f"all {len(one['rows'])} outputs match ({one['precision']})")
            print(json.dumps({"bundle": str(folder), "code": code, "said": said}) if as_json else f"{folder}: {said}")
            worst = max(worst, code)
        return worst
    if "error" in result:
        print(f"Error: {result['error']}", file=sys.stderr)
        return 2
    if play:
        print(json.dumps(result["streamed"]))
        streamed = result["streamed"]
        print(f"played: {len(streamed['sample'])} samples labelled" if "sample" in streamed
              else f"played: {len(streamed['start'])} windows streamed", file=sys.stderr)
        return 0
    if result.get("signedBy"):
        print(f"signature verified (key {result['signedBy'][:16]})", file=sys.stderr)
    for r in result["rows"]:
        print(f"{r['graph']:<6} {r['output']:<16} {json.dumps(r['shape']):<12} max_abs {r['max_abs']:.2e} "
              f"max_rel {r['max_rel']:.2e} {'ok' if r['ok'] else 'MISMATCH'}")
    bad = sum(not r["ok"] for r in result["rows"])
    print(f"{bad} output(s) differ beyond atol/rtol" if bad
          else f"all {len(result['rows'])} outputs match ({result['precision']})", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, nargs="+", help="a bundle folder; with --check, several are checked "
                        "in one browser session, one line each")
    parser.add_argument("--json", action="store_true", help="with several bundles: a JSON line per bundle")
    parser.add_argument("--check", action="store_true", help="run the page in headless chromium and report")
    parser.add_argument("--cases", type=Path, default=None, help="cases in the golden.json layout")
    parser.add_argument("--precision", choices=("fp32", "int8", "auto"), default="fp32",
                        help="model graph: fp32 (model.onnx), int8 (model.int8.onnx) or auto (int8 when present)")
    parser.add_argument("--public-key", type=Path, default=None,
                        help="PEM public key the bundle must be signed with (default: $PIPELINE_PUBLIC_KEY)")
    parser.add_argument("--play", type=Path, default=None, metavar="RECORDING.csv",
                        help="headless chromium plays this recording through the live view and prints, as JSON, "
                        "every streamed window's start and scores")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    key = args.public_key or (Path(os.environ["PIPELINE_PUBLIC_KEY"]) if os.environ.get("PIPELINE_PUBLIC_KEY") else None)
    if key is not None and not key.is_file():
        print(f"Error: {key}: public key not found; pass the PEM public key the bundle was signed for", file=sys.stderr)
        return 2
    many = args.bundle if len(args.bundle) > 1 else None
    if many and not args.check:
        parser.error("several bundles are checked with --check (serve or --play one bundle)")
    if not many:
        problem = not_regular(args.bundle[0]) if args.bundle[0].is_dir() else None
        if problem:
            print(f"Error: {problem}", file=sys.stderr)
            return 2
        server = serve(args.bundle[0], args.cases, key, args.play)
        if args.check or args.play:
            return check(server, args.cases is not None, args.timeout, args.precision, play=args.play is not None)
    else:  # a refused folder is not served: its line is the refusal
        refused = [not_regular(b) if b.is_dir() else None for b in many]
        server = serve([b for b, problem in zip(many, refused) if not problem], args.cases, key)
        return check(server, args.cases is not None, args.timeout, args.precision, many=many, as_json=args.json,
                     refused=refused)
    print(f"serving {args.bundle[0]} at http://127.0.0.1:{server.server_address[1]}/index.html (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
