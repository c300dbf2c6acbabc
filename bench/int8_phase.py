"""The INT8-aware phase against plain FP32 training and post-training INT8, over several init seeds.

For each ``--init-seed`` (the split stays the default ``--seed``'s) the FP32 epochs of the default
recipe run once; every variant then starts from a copy of that same trained FP32 model and runs
``core.qat.int8_phase`` (the code `python -m core train` runs) from the random state and batch
order a run of its own would have there, so the variants differ only in the phase, and the default
variant's rows are what `python -m core train --init-seed S` gives. Rows: the FP32 model (the
plain recipe); "ptq_file", the integer file the export builds from it
(post-training per-token INT8 with SmoothQuant and GPTQ); "ptq_sim", the PyTorch simulation of
per-token INT8 on the FP32 weights (round to nearest, the grids of core/quant/grids.py); and for
each phase variant (validation picks its epoch, epoch 0 included) its simulation ("_sim") and the
integer file the export builds from it ("_file", what ships). Macro-F1 in points on validation
and test; the means over seeds are what the INT8 target compares.

    .venv/bin/python bench/int8_phase.py [--seeds 13 14 15] [--out bench/results/int8_phase]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bench.measure import cpu_info, write_results  # noqa: E402

VARIANTS = {  # name -> TrainConfig fields of the phase
    "kd0.5_e1_lr5e-5": {"int8_epochs": 1, "distill_alpha": 0.5, "int8_lr": 5e-5},
    "kd1.0_e1_lr5e-5": {"int8_epochs": 1, "distill_alpha": 1.0, "int8_lr": 5e-5},
    "kd1.0_e2_lr1e-4": {"int8_epochs": 2, "distill_alpha": 1.0, "int8_lr": 1e-4},
}


def _file_scores(trainer, tokenizer, split, config, work: Path, calibration=None) -> dict:
    """Macro-F1 (points) of the integer INT8 file the export would build from ``trainer``'s
    model (a copy is saved: the trainer itself stays usable)."""
    from sklearn.metrics import f1_score

    from core.quant import shipped

    copied = copy.copy(trainer)
    copied.model, copied.prefix = copy.deepcopy((trainer.model, trainer.prefix))
    copied.save(work / "model", tokenizer)
    parts = {"val": split.val, "test": split.test}
    logits = shipped.integer_file_logits(work / "model", work / "int8", config.max_length,
                                        {p: [r.text for r in rows] for p, rows in parts.items()},
                                        calibration)
    ids = {label: i for i, label in enumerate(trainer.labels)}
    return {p: 100 * f1_score([ids[r.label] for r in rows], logits[p].argmax(-1),
                              average="macro") for p, rows in parts.items()}


def one_seed(seed: int, variants: dict, base_config, work: Path) -> list[dict]:
    import torch

    from core import qat, train

    config = replace(base_config, init_seed=seed, int8_epochs=0)
    t0 = time.perf_counter()
    fp32, tokenizer, split, _ = train.fp32_trainer(config, lambda e: None)
    outcome = fp32.fit()
    # where a run of its own would start the phase: the RNG (dropout) and the batch order's epoch
    rng, epoch = torch.get_rng_state(), fp32.loaders["train"].batch_sampler.epoch
    rows = [{"seed": seed, "variant": "fp32", "val": outcome["val"]["macro_f1"] * 100,
             "test": outcome["test"]["macro_f1"] * 100,
             "seconds": round(time.perf_counter() - t0, 1)}]
    calibration = [r.text for r in split.train][:300]  # what the export calibrates on
    rows.append({"seed": seed, "variant": "ptq_file", **_file_scores(
        fp32, tokenizer, split, config, work / f"{seed}-ptq", calibration)})
    for name, fields in variants.items():
        t0 = time.perf_counter()
        copied = copy.copy(fp32)  # same loaders and cache; its own model and prefix
        copied.model, copied.prefix = copy.deepcopy((fp32.model, fp32.prefix))
        torch.set_rng_state(rng)  # so the variant is what `python -m core train` would do
        fp32.loaders["train"].batch_sampler.epoch = epoch
        trainer, out = qat.int8_phase(copied, outcome, replace(config, **fields),
                                        lambda e: None)
        phase = out["int8_phase"]
        if not any(r["variant"] == "ptq_sim" for r in rows):
            rows.append({"seed": seed, "variant": "ptq_sim",
                         "val": phase["ptq"]["val_macro_f1"] * 100,
                         "test": phase["ptq"]["test_macro_f1"] * 100})
        rows.append({"seed": seed, "variant": f"{name}_sim", "val": out["val"]["macro_f1"] * 100,
                     "test": out["test"]["macro_f1"] * 100, "best_epoch": phase["best_epoch"],
                     "seconds": round(time.perf_counter() - t0, 1)})
        rows.append({"seed": seed, "variant": f"{name}_file", **_file_scores(
            trainer, tokenizer, split, config, work / f"{seed}-{name}")})
        print(rows[-2], rows[-1], flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    names = list(dict.fromkeys(r["variant"] for r in rows))
    fp32 = {r["seed"]: r for r in rows if r["variant"] == "fp32"}
    out = []
    for name in names:
        mine = [r for r in rows if r["variant"] == name]
        val = statistics.mean(r["val"] for r in mine)
        test = statistics.mean(r["test"] for r in mine)
        out.append({"variant": name, "seeds": [r["seed"] for r in mine], "val": round(val, 2),
                    "test": round(test, 2),
                    "val_vs_fp32": round(val - statistics.mean(fp32[r["seed"]]["val"]
                                                               for r in mine), 2),
                    "test_vs_fp32": round(test - statistics.mean(fp32[r["seed"]]["test"]
                                                                 for r in mine), 2)})
    return out


def markdown(result: dict) -> str:
    lines = [f"# INT8-aware phase vs FP32 and post-training INT8 ({result['cpu']['model']}, "
             f"flags {', '.join(result['cpu']['flags'])}, {result['date']})", "",
             f"Command: `{result['command']}`. Macro-F1 in points; each seed is an init seed on "
             "the default split; every variant starts from the same trained FP32 model.", "",
             "| variant | " + " | ".join(f"seed {s} val / test" for s in result["seeds"])
             + " | mean val / test | vs FP32 val / test |",
             "|---|" + "---|" * (len(result["seeds"]) + 2)]
    for s in result["summary"]:
        cells = []
        for seed in result["seeds"]:
            r = next((r for r in result["rows"] if r["variant"] == s["variant"]
                      and r["seed"] == seed), None)
            cells.append(f"{r['val']:.2f} / {r['test']:.2f}" if r else "–")
        lines.append(f"| {s['variant']} | " + " | ".join(cells)
                     + f" | {s['val']:.2f} / {s['test']:.2f} | "
                       f"{s['val_vs_fp32']:+.2f} / {s['test_vs_fp32']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from core.train import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--data", default=None, help="dataset (default: the seed set)")
    p.add_argument("--base", default=None, help="base model (default: the bundled e5)")
    p.add_argument("--epochs", type=int, default=None, help="FP32 epochs (default: the recipe's)")
    p.add_argument("--freeze-below", type=int, default=None, help="K (default: the recipe's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "int8_phase"))
    args = p.parse_args(argv)
    fields = {k: v for k, v in (("data", args.data), ("base", args.base),
                                ("epochs", args.epochs), ("freeze_below", args.freeze_below))
              if v is not None}
    base_config = TrainConfig(**fields)
    variants = {k: VARIANTS[k] for k in args.only}
    result = {"command": "python bench/int8_phase.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "cpu": cpu_info(), "seeds": args.seeds,
              "variants": variants, "rows": []}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            result["rows"] += one_seed(seed, variants, base_config, Path(work))
            result["summary"] = summary(result["rows"])
            write_results(args.out, result, markdown(result))  # after every seed: a cut run keeps
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
