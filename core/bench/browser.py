"""The browser row: the INT8 ONNX model in onnxruntime-web (wasm) inside headless Chromium.

``BrowserWorker`` drives one page; it runs inside a ``core.bench.worker`` process like every other
row (one Playwright instance per process: the sync API allows one per thread). Text is tokenized
in Python with the run's tokenizer (the same ids the browser bundle's JS tokenizer produces, as the
web-bundle parity test checks); the page times ``session.run`` only, like the other rows time
``forward``. A loopback server sends the cross-origin-isolation headers multi-threaded wasm needs,
and serves .mjs/.wasm with the right content types (shared stack notes, "Browser").
"""

from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ORT_WEB_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>bench</title></head><body>
<script type="module">
import * as ort from "/ort/ort.wasm.min.mjs";
ort.env.wasm.wasmPaths = "/ort/";
let session = null;
const feeds = (batch) => Object.fromEntries(Object.entries(batch).map(([name, t]) =>
  [name, new ort.Tensor("int64", BigInt64Array.from(t.data, BigInt), t.dims)]));
window.benchInit = async (threads) => {
  ort.env.wasm.numThreads = threads;
  const t0 = performance.now();
  session = await ort.InferenceSession.create("/model.onnx", {executionProviders: ["wasm"]});
  return {load_ms: performance.now() - t0, isolated: self.crossOriginIsolated,
          threads: ort.env.wasm.numThreads, inputs: session.inputNames};
};
window.benchTime = async (batch, warmup, iters) => {
  const f = feeds(batch);
  for (let i = 0; i < warmup; i++) await session.run(f);
  const times = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await session.run(f);
    times.push(performance.now() - t0);
  }
  return times;
};
window.benchLogits = async (batch) => {
  const out = await session.run(feeds(batch));
  return {data: Array.from(out.logits.data), dims: out.logits.dims};
};
window.benchReady = true;
</script></body></html>"""


def find_ort_web(bundle: Path, explicit: str | None = None) -> Path | None:
    """A folder holding the onnxruntime-web files the page needs (given, inside the run's
    ``bundle``, or web_export's node_modules), or None."""
    from core import paths

    candidates = [Path(explicit)] if explicit else []
    if bundle.is_dir():
        candidates += [p.parent for p in bundle.rglob(ORT_WEB_FILES[0])]
    candidates.append(paths.REPO_ROOT / "web_export" / "node_modules" / "onnxruntime-web" / "dist")
    for folder in candidates:
        if all((folder / name).is_file() for name in ORT_WEB_FILES):
            return folder
    return None


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def end_headers(self):
        # Cross-origin isolation: without it onnxruntime-web falls back to one thread.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self):
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        body, ctype = route() if callable(route) else route
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _file(path: Path, ctype: str):
    return lambda: (path.read_bytes(), ctype)


class BrowserWorker:
    def __init__(self, spec: dict):
        self.spec = spec
        self.info: dict = {}
        self._server = self._pw = self._browser = self._page = None

    def _serve(self) -> str:
        dist, model = Path(self.spec["ort_web_dir"]), Path(self.spec["path"])
        types = {".mjs": "text/javascript", ".wasm": "application/wasm"}
        routes = {"/": (PAGE.encode(), "text/html; charset=utf-8"),
                  "/model.onnx": _file(model, "application/octet-stream")}
        routes.update({f"/ort/{n}": _file(dist / n, types[Path(n).suffix]) for n in ORT_WEB_FILES})
        handler = type("Handler", (_Handler,), {"routes": routes})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> dict:
        from playwright.sync_api import sync_playwright

        from core.runtimes.base import Runtime

        t0 = time.perf_counter()
        self.tokenizer = Runtime(self.spec["path"])  # tokenize only; forward runs in the page
        url = self._serve()
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=self.spec["chromium"],
                                                 headless=True, args=CHROMIUM_ARGS)
        self._page = self._browser.new_page()
        self._page.goto(url)
        self._page.wait_for_function("window.benchReady === true", timeout=60_000)
        ready = self._page.evaluate("(n) => window.benchInit(n)", self.spec["threads"])
        self.tokenizer.input_names = [n for n in self.tokenizer.input_names if n in ready["inputs"]]
        self.logits(["워밍업"])
        self.info = {"load_s": time.perf_counter() - t0,
                     "session_ms": ready["load_ms"], "threads_used": ready["threads"],
                     "isolated": ready["isolated"], "precision": "int8",
                     "size_bytes": Path(self.spec["path"]).stat().st_size,
                     "labels": self.tokenizer.labels, "providers": ["wasm"]}
        return self.info

    def _batch(self, texts: list[str]) -> tuple[dict, tuple]:
        enc = self.tokenizer.encode(texts)
        shape = next(iter(enc.values())).shape
        return {k: {"data": v.ravel().tolist(), "dims": list(v.shape)} for k, v in enc.items()}, shape

    def time(self, texts: list[str], warmup: int, iters: int) -> dict:
        batch, shape = self._batch(texts)
        times = self._page.evaluate("([b, w, n]) => window.benchTime(b, w, n)",
                                    [batch, warmup, iters])
        return {"times_ms": times, "encode_ms": None, "seq_len": int(shape[1]),
                "batch_size": len(texts)}

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch, _ = self._batch(texts[i:i + batch_size])
            res = self._page.evaluate("(b) => window.benchLogits(b)", batch)
            out.append(np.asarray(res["data"], dtype=np.float32).reshape(res["dims"]))
        return np.concatenate(out) if out else np.zeros((0, len(self.tokenizer.labels)))

    def memory(self) -> dict:
        # A tab's memory is spread over Chromium's processes and not comparable with one
        # Python process's peak RSS: left out rather than reported wrong.
        return {"rss_mb": None, "peak_rss_mb": None}

    def close(self) -> None:
        for closer in (getattr(self._browser, "close", None), getattr(self._pw, "stop", None),
                       getattr(self._server, "shutdown", None)):
            if closer is not None:
                try:
                    closer()
                except Exception:  # closing is best effort; the harness is already done
                    pass
