"""Where a training run's time goes: forward, backward, clipping, optimizer step, evaluation.

Runs the default recipe (or the given train flags) for a few epochs in this process with timers
wrapped around the Trainer's parts, once per variant, one after the other:

* ``fused``: the loop as it ships (AdamW ``fused=True``);
* ``loop``: the same with torch's default AdamW implementation (on CPU a loop over the tensors:
  the loop before it was fused).

Forward time of the first epoch includes computing the frozen prefix once for every split (the
cache); later epochs read it. Per variant it reports seconds per part and per epoch. The first
variant's wall time also holds one-time costs (imports, building the bundled base model):
compare the parts and the epochs.

    .venv/bin/python bench/train_profile.py [--epochs 2] [--variants fused loop] [-- train flags]

Writes bench/results/train_profile.json and .md with the CPU flags and the command line.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bench.measure import cpu_info, write_results  # noqa: E402

PARTS = ("forward", "backward", "clip", "optimizer", "evaluate")


def _timed(totals: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - t0
    return wrapper


def profile(variant: str, epochs: int, flags: list[str]) -> dict:
    import accelerate
    import torch

    from core import train
    from core.cli import build_parser
    from core.train_cli import train_config_from_args

    totals: dict[str, float] = collections.defaultdict(float)
    real_adamw, saved = torch.optim.AdamW, {}
    patches = [(train.Trainer, "_forward", "forward"), (train.Trainer, "evaluate", "evaluate"),
               (accelerate.Accelerator, "backward", "backward"),
               (accelerate.Accelerator, "clip_grad_norm_", "clip")]

    class AdamW(real_adamw):  # the variant's implementation, its step timed
        def __init__(self, params, **kwargs):
            if variant == "loop":
                kwargs.pop("fused", None)
            super().__init__(params, **kwargs)

        step = _timed(totals, "optimizer", real_adamw.step)

    for owner, attr, name in patches:
        saved[(owner, attr)] = getattr(owner, attr)
        setattr(owner, attr, _timed(totals, name, getattr(owner, attr)))
    torch.optim.AdamW = AdamW
    try:
        with tempfile.TemporaryDirectory(prefix="train_profile_") as tmp:
            config = train_config_from_args(build_parser().parse_args(
                ["train", "--out", str(Path(tmp) / "run"), "--epochs", str(epochs),
                 "--patience", "0", *flags]))
            t0 = time.perf_counter()
            result = train.run(config)
            wall = time.perf_counter() - t0
    finally:
        torch.optim.AdamW = real_adamw
        for (owner, attr), fn in saved.items():
            setattr(owner, attr, fn)
    steps = math.ceil(result.split_sizes["train"] / config.batch_size) * result.epochs_run
    return {"variant": variant, "wall_s": round(wall, 1), "epoch_seconds": result.epoch_seconds,
            "parts_s": {p: round(totals[p], 2) for p in PARTS},
            "optimizer_ms_per_step": round(1e3 * totals["optimizer"] / max(steps, 1), 2),
            "val_macro_f1": round(result.val["macro_f1"], 4)}


def markdown(result: dict) -> str:
    lines = ["# Where the training time goes", "", f"Command: `{result['command']}`", "",
             f"CPU: {result['cpu']['model']}, {os.cpu_count()} logical cores, flags "
             f"{', '.join(result['cpu']['flags'])}", "",
             "Seconds per part over the whole run (forward includes the first epoch's frozen-"
             "prefix pass over every split, and evaluation's forward passes).", "",
             "| variant | wall s | epochs s | " + " | ".join(PARTS) + " | optimizer ms/step "
             "| val macro-F1 |", "| --- | ---: | --- | " + " | ".join("---:" for _ in PARTS)
             + " | ---: | ---: |"]
    for r in result["runs"]:
        lines.append(f"| {r['variant']} | {r['wall_s']} | "
                     f"{', '.join(f'{s:.1f}' for s in r['epoch_seconds'])} | "
                     + " | ".join(str(r["parts_s"][p]) for p in PARTS)
                     + f" | {r['optimizer_ms_per_step']} | {r['val_macro_f1']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=["fused", "loop"],
                        default=["fused", "loop"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_profile"))
    parser.add_argument("flags", nargs="*", help="flags passed on to the train config")
    args = parser.parse_args()
    result = {"command": shlex.join([".venv/bin/python", *sys.argv]), "cpu": cpu_info(),
              "runs": []}
    for variant in args.variants:
        result["runs"].append(profile(variant, args.epochs, args.flags))
        print(result["runs"][-1], flush=True)
    write_results(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
