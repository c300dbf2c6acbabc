"""How long the default run takes to train: `python -m core train` end to end, cached and uncached.

Runs the real CLI (imports, model build, tokenization, every epoch, validation, test, saving) as
a subprocess into a temporary run folder, once with the frozen-prefix cache (the default) and once
with `--no-cache`, one after the other in this one process, and reports for each: wall time of
the whole command, `train_seconds` and the per-epoch seconds from its metrics.json, validation
and test macro-F1. Issue #12's target: the default run in at most 5 minutes on a 2-core CPU.

    .venv/bin/python bench/train_speed.py [--only cached|uncached] [--keep DIR] [-- train flags]

Writes bench/results/train_speed.json and .md with the CPU flags and the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bench.measure import cpu_info, write_results  # noqa: E402

TARGET_S = 300.0


def one_run(cached: bool, extra: list[str], keep: str | None = None) -> dict:
    """One timed `python -m core train`; ``keep``: copy its run folder there afterwards (so the
    measured run can be the one the app, export and benchmark then use)."""
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "core", "train", "--out", str(out), *extra]
        if not cached:
            cmd.append("--no-cache")
        env = {**os.environ, "STUDIO_WORKSPACE": os.environ.get("STUDIO_WORKSPACE",
                                                                 str(ROOT / "workspace"))}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        if keep:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(out, keep)
    epochs = m["epoch_seconds"]
    return {"cached": cached, "command": shlex.join(cmd[1:]), "wall_s": round(wall, 1),
            "train_seconds": m["train_seconds"], "epoch_seconds": epochs,
            "first_epoch_s": epochs[0],
            "later_epoch_median_s": round(statistics.median(epochs[1:]), 1) if epochs[1:] else None,
            "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
            "val_macro_f1": round(m["val"]["macro_f1"], 4),
            "test_macro_f1": round((m.get("test") or {}).get("macro_f1", float("nan")), 4),
            "target_met": wall <= TARGET_S}


def markdown(result: dict) -> str:
    lines = ["# Training speed of the default run", "", f"Command: `{result['command']}`", "",
             f"CPU: {result['cpu']['model']}, {os.cpu_count()} logical cores, flags "
             f"{', '.join(result['cpu']['flags'])}; load average at start "
             f"{result['load_avg_start']}", "",
             "| cache | wall s (whole command) | train s | first epoch s | later epochs (median) s "
             "| epochs | val macro-F1 | test macro-F1 | <= 300 s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["runs"]:
        lines.append(f"| {'on' if r['cached'] else 'off'} | {r['wall_s']} | {r['train_seconds']} "
                     f"| {r['first_epoch_s']} | {r['later_epoch_median_s']} | {r['epochs_run']} "
                     f"| {r['val_macro_f1']} | {r['test_macro_f1']} | "
                     f"{'yes' if r['target_met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["cached", "uncached"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed"))
    parser.add_argument("--keep", metavar="DIR",
                        help="copy the cached run's folder here, e.g. workspace/runs/default")
    parser.add_argument("extra", nargs="*", help="flags passed on to `python -m core train`")
    args = parser.parse_args()
    result = {"command": shlex.join([".venv/bin/python", *sys.argv]), "cpu": cpu_info(),
              "load_avg_start": [round(x, 2) for x in os.getloadavg()], "runs": []}
    for cached in (True, False):
        if args.only and args.only != ("cached" if cached else "uncached"):
            continue
        result["runs"].append(one_run(cached, args.extra, args.keep if cached else None))
        print(json.dumps(result["runs"][-1]), flush=True)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
