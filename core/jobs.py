"""Long stages run as background processes (``python -m core job DIR``) with an event log.

A job is a folder ``workspace/jobs/<id>/`` holding ``config.json`` (the stage and its config
dataclass, ``dataclasses.asdict``), ``job.json`` (key, stage, pid), ``events.jsonl`` (written by
the stage through core.progress) and ``output.log`` (its stdout/stderr). The child rebuilds the
same dataclass (``load_config``) and runs the same function the CLI runs, so a page and the
command line share every default. Pages find a job by its *key* (e.g. ``train:default``): starting
a key that is already running returns the running job, so Streamlit reruns never start a second
copy. A process that died without a final event is reported as crashed with the tail of its output.
Each job runs in its own session, so stopping or restarting the Streamlit server (even Ctrl-C to
its process group) leaves it running; the next server finds it by its key.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from core import paths
from core.errors import JobError
from core.progress import EVENTS_ENV, EventLog

TERMINAL = ("done", "failed", "cancelled")
FINAL_EVENTS = ("result", "error", "cancelled")  # the event types a job ends with
# stage -> (its config dataclass, the function running it: config -> (exit code, result)), as
# "module:name"; the CLI's subcommands call the same functions.
STAGES = {
    "train": ("core.train:TrainConfig", "core.train_cli:run_train"),
    "export": ("core.export:ExportConfig", "core.export_cli:run_export"),
    "web-export": ("core.web_export:WebExportConfig", "core.web_export_cli:run_web_export"),
    "bench": ("core.bench.benchmark:BenchConfig", "core.bench.cli:run_bench"),
    "generate": ("core.generate.config:GenerateConfig", "core.generate.cli:run_generate"),
    "selftest": ("core.selftest_cli:SelftestConfig", "core.selftest_cli:run_selftest"),
}


def _resolve(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def stage_of(config) -> str:
    """The stage whose config dataclass ``config`` is."""
    for stage, (cls_ref, _) in STAGES.items():
        module, name = cls_ref.split(":")
        if type(config).__name__ == name and type(config).__module__ == module:
            return stage
    raise JobError(f"{type(config).__name__} is not the config of a stage ({', '.join(STAGES)})")


def _tuples(value):
    """JSON lists back to the tuples the frozen configs hold (labels, runtimes, axes...)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def save_config(job_dir: str | Path, config) -> str:
    """Write ``config`` (and its stage) as the job folder's config.json; returns the stage."""
    from core.progress import _jsonable

    stage = stage_of(config)
    saved = {"stage": stage, "config": _jsonable(dataclasses.asdict(config))}
    (Path(job_dir) / "config.json").write_text(json.dumps(saved, ensure_ascii=False, indent=1),
                                               encoding="utf-8")
    return stage


def load_config(job_dir: str | Path):
    """(stage, config): the dataclass a job was started with, rebuilt from its config.json."""
    saved = json.loads((Path(job_dir) / "config.json").read_text(encoding="utf-8"))
    stage = saved["stage"]
    cls = _resolve(STAGES[stage][0])
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return stage, cls(**{k: _tuples(v) for k, v in saved["config"].items() if k in init})


def run_config(stage: str, config) -> tuple[int, object]:
    """Run a stage's config the way its CLI subcommand does (progress bar, printed summary).

    While it runs, SIGTERM (what ``Job.cancel`` sends) raises KeyboardInterrupt: the stage's
    ``finally`` blocks remove its staging folder and the CLI records the job as cancelled."""
    with _sigterm_interrupts():
        return _resolve(STAGES[stage][1])(config)


@contextmanager
def _sigterm_interrupts():
    def interrupt(signum, frame):
        raise KeyboardInterrupt("cancelled (SIGTERM)")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are not ours to route
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class JobStatus:
    state: str  # "running" | "done" | "failed" | "cancelled"
    progress: dict | None = None  # the newest progress event
    result: dict | None = None  # payload of the "result" event
    error: str | None = None
    events: list[dict] = field(default_factory=list)
    output: str = ""  # a crashed job's last lines of output.log (what it printed before dying)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Job:
    dir: Path

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def info(self) -> dict:
        return json.loads((self.dir / "job.json").read_text(encoding="utf-8"))

    @property
    def key(self) -> str:
        return self.info["key"]

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    def output_tail(self, n_chars: int = 2000) -> str:
        try:
            text = (self.dir / "output.log").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return text[-n_chars:]

    def alive(self) -> bool:
        info = self.info
        pid, created = info.get("pid"), info.get("create_time")
        if not pid:
            return False
        try:
            proc = psutil.Process(pid)
            # A reused pid belongs to another process: compare start times (both read by psutil
            # from the kernel's start tick, so one process always gives the same value; another
            # one started even a tenth of a second apart is told apart).
            if created is not None and abs(proc.create_time() - created) > 0.05:
                return False
            if proc.status() == psutil.STATUS_ZOMBIE:
                try:  # reap our own child so it does not linger
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                return False
            return True
        except psutil.NoSuchProcess:
            return False

    def status(self) -> JobStatus:
        # Ask whether it is alive before reading the log: a process that was already gone then
        # has all its events written, so one ending just now is never taken for a crash.
        alive = self.alive()
        events = EventLog.read(self.events_path)
        progress = next((e for e in reversed(events) if e["type"] == "progress"), None)
        for e in reversed(events):
            if e["type"] == "result":
                return JobStatus("done", progress, e.get("result"), None, events)
            if e["type"] == "error":
                return JobStatus("failed", progress, None, e.get("message"), events)
            if e["type"] == "cancelled":
                return JobStatus("cancelled", progress, None, "cancelled by the user", events)
        if alive:
            return JobStatus("running", progress, None, None, events)
        tail = "\n".join(self.output_tail().strip().splitlines()[-8:])
        return JobStatus("failed", progress, None,
                         "the process ended without a result (crashed or killed)", events, tail)

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the job's whole process group: SIGTERM, then SIGKILL after ``grace_s``."""
        if not self.alive():
            return
        pid = self.info["pid"]
        try:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.time() + grace_s
            while self.alive() and time.time() < deadline:
                time.sleep(0.1)
            if self.alive():
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # It may have ended meanwhile with its own final event (a result, or "cancelled").
        if not any(e["type"] in FINAL_EVENTS for e in EventLog.read(self.events_path)):
            EventLog(self.events_path).write("cancelled")


@contextmanager
def _lock():
    with open(paths.jobs_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def list_jobs(key: str | None = None) -> list[Job]:
    """Jobs, oldest first, optionally only those with ``key``."""
    infos = []
    for folder in paths.jobs_dir().iterdir():
        try:
            info = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a job folder, or one being created
        if key is None or info.get("key") == key:
            infos.append((info.get("started", 0.0), folder.name, folder))
    return [Job(folder) for _, _, folder in sorted(infos)]


def find(key: str) -> Job | None:
    """The newest job with this key, running or not."""
    found = list_jobs(key)
    return found[-1] if found else None


def start(key: str, config, env: dict[str, str] | None = None) -> Job:
    """Run a stage's ``config`` in the background, unless a job with ``key`` is running.

    ``env`` adds environment variables for the child only (e.g. an API key): they are never written
    to job.json, config.json or the event log.
    """
    stage_of(config)  # refuse anything that is not a stage's config before making a folder
    with _lock():
        current = find(key)
        if current is not None and not current.status().finished:
            return current
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"{time.time() % 1:.3f}"[1:]
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in key)[:40]
        job_dir = paths.jobs_dir() / f"{stamp}-{secrets.token_hex(3)}-{safe}"
        job_dir.mkdir(parents=True)
        stage = save_config(job_dir, config)
        events = job_dir / "events.jsonl"
        EventLog(events).write("start", stage=stage)
        child_env = {**os.environ, **(env or {}), EVENTS_ENV: str(events), "PYTHONUNBUFFERED": "1"}
        child_env.setdefault(paths.WORKSPACE_ENV, str(paths.workspace()))
        try:
            with open(job_dir / "output.log", "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "core", "job", str(job_dir)],
                    cwd=paths.REPO_ROOT,
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: cancel stops its children too
                )
        except OSError as exc:
            raise JobError(f"could not start job {key!r}: {exc}") from exc
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:  # it already ended; status() then reads its output
            created = None
        info = {"key": key, "stage": stage, "pid": proc.pid, "started": time.time(),
                "create_time": created}
        (job_dir / "job.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
        return Job(job_dir)
