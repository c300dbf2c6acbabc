"""Recipe levers of the default run, each against the default, with several seeds (issue #12).

Every setting is `python -m core train` (the real CLI, end to end, via bench/train_speed.one_run)
with the same split (the default `--seed`) and a different `--init-seed` per repeat (the head's
initialisation and the batch order), so the spread shows how much a result moves by chance alone.
Runs go seed-major (every setting once, then every setting again, ...), so a table cut short still
compares all settings on the same seeds. Results are appended to the JSON after every run and the
markdown table is rewritten; `--resume` skips runs already there.

    .venv/bin/python bench/train_levers.py [--seeds 13 14 15] [--only baseline ls0.1 ...]

Levers: `query-prefix` trains on a copy of the dataset with e5's "query: " before every text (same
records, same order, so the same split); the others are `python -m core train` flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from core.bench.measure import cpu_info, write_results  # noqa: E402
from train_speed import one_run  # noqa: E402

SETTINGS = {  # name -> (train flags, what it changes)
    "baseline": ([], "the default recipe (K=7, lr 2e-4, 8 epochs, <s> pooling)"),
    "ls0.1": (["--label-smoothing", "0.1"], "label smoothing 0.1"),
    "llrd0.8": (["--layer-decay", "0.8"], "layer-wise lr decay 0.8 over the 5 trained layers"),
    "reinit1": (["--reinit-top", "1"], "top encoder layer re-initialised"),
    "query-prefix": ([], 'e5\'s "query: " before every text'),
    "k8": (["--freeze-below", "8"], "freeze below 8 (4 trained layers: faster)"),
    "k4": (["--freeze-below", "4"], "freeze below 4 (8 trained layers: slower)"),
    "lr1e-4": (["--lr", "1e-4"], "peak learning rate 1e-4"),
    "e6": (["--epochs", "6"], "6 epochs instead of 8 (same schedule shape: faster)"),
    "e5": (["--epochs", "5"], "5 epochs instead of 8 (same schedule shape: faster)"),
    "k8e6": (["--freeze-below", "8", "--epochs", "6"], "freeze below 8 and 6 epochs (fastest)"),
}


def prefixed_dataset(folder: Path) -> Path:
    """The seed set with "query: " before every text, in the same order (same split)."""
    from core import data

    records = data.load_dataset(None)
    path = folder / "seed_query_prefix.jsonl"
    path.write_text(data.to_jsonl([type(r)(**{**vars(r), "text": "query: " + r.text})
                                   for r in records]), encoding="utf-8")
    return path


def summary(runs: list[dict]) -> list[dict]:
    rows = []
    for name in SETTINGS:
        mine = [r for r in runs if r["setting"] == name]
        if not mine:
            continue
        row = {"setting": name, "what": SETTINGS[name][1], "seeds": [r["init_seed"] for r in mine]}
        for key in ("val_macro_f1", "test_macro_f1", "wall_s"):
            values = [r[key] for r in mine]
            row[key] = {"mean": statistics.mean(values),
                        "sd": statistics.stdev(values) if len(values) > 1 else None,
                        "min": min(values), "max": max(values)}
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    def cell(stat: dict, digits: int = 3) -> str:
        sd = "" if stat["sd"] is None else f" ± {stat['sd']:.{digits}f}"
        return f"{stat['mean']:.{digits}f}{sd} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"

    lines = ["# Recipe levers of the default run (several seeds each)", "",
             f"Command: `{result['command']}`", "",
             f"CPU: {result['cpu']['model']}, {os.cpu_count()} logical cores, flags "
             f"{', '.join(result['cpu']['flags'])}", "",
             "Same split for every run (`--seed 13`: 3,032 train / 648 val / 648 test); the "
             "repeats differ in `--init-seed` only. Mean ± standard deviation (min-max) over "
             "the seeds. Wall time is the whole `python -m core train` command (other work may "
             "have shared the CPU during some runs: quality is deterministic, time is not).", "",
             "| setting | what | seeds | val macro-F1 | test macro-F1 | wall s |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for row in summary(result["runs"]):
        lines.append(f"| {row['setting']} | {row['what']} | {', '.join(map(str, row['seeds']))} "
                     f"| {cell(row['val_macro_f1'])} | {cell(row['test_macro_f1'])} "
                     f"| {cell(row['wall_s'], 0)} |")
    lines += ["", "Per run:", "", "| setting | init seed | best epoch / run | val | test | wall s |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["runs"]:
        lines.append(f"| {r['setting']} | {r['init_seed']} | {r['best_epoch']}/{r['epochs_run']} "
                     f"| {r['val_macro_f1']:.4f} | {r['test_macro_f1']:.4f} | {r['wall_s']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_levers"))
    parser.add_argument("--resume", action="store_true", help="keep runs already in the JSON")
    args = parser.parse_args()
    out = Path(args.out)
    old = (json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
           if args.resume and out.with_suffix(".json").exists() else {"runs": []})
    result = {"command": shlex.join([".venv/bin/python", *sys.argv]), "cpu": cpu_info(),
              "runs": old["runs"]}
    done = {(r["setting"], r["init_seed"]) for r in result["runs"]}
    with tempfile.TemporaryDirectory(prefix="train_levers_") as tmp:
        prefixed = prefixed_dataset(Path(tmp)) if "query-prefix" in args.only else None
        for seed in args.seeds:
            for name in args.only:
                if (name, seed) in done:
                    continue
                flags = list(SETTINGS[name][0]) + ["--init-seed", str(seed)]
                if name == "query-prefix":
                    flags += ["--data", str(prefixed)]
                run = {"setting": name, "init_seed": seed, **one_run(True, flags)}
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
                write_results(out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
