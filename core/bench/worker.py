"""One runtime in its own process, driven by the benchmark over a JSON-lines pipe.

Each runtime gets a fresh process so its load time and peak memory are its own, and so thread pools
left spinning by one runtime cannot slow the next (shared stack notes, "Runtimes"). The parent
(``ProcessWorker``) sends one command per line on stdin; the child (``python -m core.bench.worker
SPEC``) answers one JSON line on its own copy of stdout; anything libraries print goes to stderr.

Commands: load, time (forward on a fixed batch: warm-up then timed calls), logits, memory,
serve / unserve (the runtime behind core.bench.serving's HTTP endpoint), exit.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb() -> float:
    """VmHWM, the high-water RSS of this process image. Not getrusage's ru_maxrss: Linux carries
    that across exec, so a worker forked from a parent holding torch reported the parent's peak
    (proc(5): VmHWM; getrusage(2): ru_maxrss)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # kB (KiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _import_library(spec: dict) -> float:
    """Import the runtime's library up front (timed), hiding torch from non-PyTorch runtimes.

    transformers imports torch whenever it is installed, even for a tokenizer (~200 MB of RSS an
    ONNX Runtime or OpenVINO deployment would never carry). A ``None`` entry in ``sys.modules``
    makes ``import torch`` fail and ``importlib.util.find_spec("torch")`` return None, which is how
    transformers decides torch is absent (Python docs, "The module cache": sys.modules).
    """
    if spec.get("hide_torch"):
        sys.modules["torch"] = None
    t0 = time.perf_counter()
    __import__("playwright.sync_api" if spec["library"] == "browser" else spec["library"])
    import transformers  # noqa: F401  (the tokenizer side, same for every runtime)

    return time.perf_counter() - t0


class Handler:
    def __init__(self, spec: dict):
        self.spec = spec
        self.runtime = None
        self.server = None
        self.browser = None  # core.bench.browser.BrowserWorker for the browser rows

    def load(self, req: dict) -> dict:
        from core.runtimes import load

        if self.spec["library"] == "browser":
            from core.bench.browser import BrowserWorker

            self.browser = BrowserWorker(self.spec)
            return self.browser.start()
        rss0, t0 = _rss_mb(), time.perf_counter()
        self.runtime = load(self.spec["path"], **self.spec.get("options", {}))
        self.runtime.logits(["워밍업"])  # the first call builds lazy state; part of loading
        return {"load_s": time.perf_counter() - t0, "rss_before_mb": rss0,
                "rss_after_mb": _rss_mb(), "precision": self.runtime.precision,
                "size_bytes": self.runtime.size_bytes(), "labels": self.runtime.labels,
                "providers": self._providers()}

    def _providers(self) -> list[str] | None:
        session = getattr(self.runtime, "session", None)
        return session.get_providers() if session is not None else None

    def time(self, req: dict) -> dict:
        if self.browser is not None:
            return self.browser.time(req["texts"], req["warmup"], req["iters"])
        rt, texts = self.runtime, req["texts"]
        batch = rt.encode(texts)
        for _ in range(req["warmup"]):
            rt.forward(batch)
        times = []
        for _ in range(req["iters"]):
            t0 = time.perf_counter()
            rt.forward(batch)
            times.append((time.perf_counter() - t0) * 1e3)
        encode = []
        for _ in range(min(req["iters"], 10)):
            t0 = time.perf_counter()
            rt.encode(texts)
            encode.append((time.perf_counter() - t0) * 1e3)
        return {"times_ms": times, "encode_ms": float(np.median(encode)) if encode else None,
                "seq_len": int(batch["input_ids"].shape[1]), "batch_size": len(texts)}

    def logits(self, req: dict) -> dict:
        model = self.browser or self.runtime
        return {"logits": model.logits(req["texts"], req.get("batch_size", 32)).tolist()}

    def memory(self, req: dict) -> dict:
        if self.browser is not None:
            return self.browser.memory()
        return {"rss_mb": _rss_mb(), "peak_rss_mb": _peak_rss_mb()}

    def serve(self, req: dict) -> dict:
        from core.bench.serving import start_server

        if self.browser is not None:
            raise RuntimeError("the browser row is not served over HTTP")
        self.server = start_server(self.runtime)
        return {"port": self.server.port}

    def unserve(self, req: dict) -> dict:
        if self.server is not None:
            self.server.stop()
            self.server = None
        return {}

    def close(self) -> None:
        self.unserve({})
        if self.browser is not None:
            self.browser.close()


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")

    try:
        send({"ready": True, "import_s": _import_library(spec), "rss_mb": _rss_mb()})
    except Exception as exc:  # reported to the parent as this row's reason
        send({"error": f"{type(exc).__name__}: {exc}"})
        return
    handler = Handler(spec)
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "exit":
            break
        try:
            send(getattr(handler, req["cmd"])(req))
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"})
    handler.close()


def worker_env() -> dict[str, str]:
    """Environment every worker gets (recorded in results.json).

    OMP_WAIT_POLICY=PASSIVE unless the user set it: PyTorch's OpenMP (GNU libgomp) otherwise
    busy-waits at every parallel region, and when another process holds one of the cores a
    thread gets descheduled mid-spin. Measured here (2 cores, one busy with another job): the
    12-layer model took 980 ms a sentence with 2 threads, 21 ms with PASSIVE, 16 ms with 1 thread,
    so the baseline measured the neighbours, not PyTorch. OMP_WAIT_POLICY is the OpenMP spec's
    variable (GCC libgomp manual, "OMP_WAIT_POLICY"); ONNX Runtime and OpenVINO ignore it.
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


class WorkerError(RuntimeError):
    """The worker process failed a command or died; the message says why."""


class ProcessWorker:
    """The parent's side: start the child, send commands, read answers with a timeout."""

    def __init__(self, spec: dict, timeout: float = 600.0):
        from core import paths

        self.spec, self.timeout = spec, timeout
        self.info: dict = {}
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
               "PYTHONPATH": str(paths.REPO_ROOT), **worker_env()}
        if spec.get("log"):
            Path(spec["log"]).parent.mkdir(parents=True, exist_ok=True)
        self._stderr = open(spec.get("log") or os.devnull, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.bench.worker", json.dumps(spec)], cwd=paths.REPO_ROOT,
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, encoding="utf-8")
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _answer(self) -> dict:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            raise WorkerError(f"no answer within {self.timeout:.0f} s") from None
        if line is None:
            raise WorkerError(f"the worker process ended (exit code {self.proc.wait()})"
                              + self._log_tail())
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(answer["error"])
        return answer

    def _log_tail(self) -> str:
        log = self.spec.get("log")
        if not log or not Path(log).is_file():
            return ""
        tail = Path(log).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return (": " + " | ".join(tail)) if tail else ""

    def call(self, cmd: str, **fields) -> dict:
        if self.proc.poll() is not None:
            raise WorkerError(f"the worker process already ended (exit code {self.proc.poll()})")
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}, ensure_ascii=False) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def start(self) -> dict:
        ready = self._answer()
        self.info = {"import_s": ready["import_s"], **self.call("load")}
        return self.info

    def time(self, texts: list[str], warmup: int, iters: int) -> dict:
        return self.call("time", texts=texts, warmup=warmup, iters=iters)

    def logits(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.call("logits", texts=texts)["logits"], dtype=np.float32)

    def memory(self) -> dict:
        return self.call("memory")

    def serve(self) -> int:
        return self.call("serve")["port"]

    def unserve(self) -> None:
        self.call("unserve")

    def begin_close(self) -> None:
        """Ask the child to exit without waiting (closing several workers at once is faster:
        each spends about a second tearing down its runtime)."""
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write('{"cmd": "exit"}\n')
                self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            self.begin_close()
            if self.proc.poll() is None:
                self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
        finally:
            self._stderr.close()


if __name__ == "__main__":
    main()
