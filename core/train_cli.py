"""CLI: ``python -m core train`` and ``python -m core predict`` (thin wrappers over core calls).

Multi-GPU: ``accelerate launch --multi_gpu --num_processes N -m core train ...`` runs the same loop.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import ConfigError


def register(subparsers) -> None:
    from core.models.registry import BUNDLED_DEFAULT

    train = subparsers.add_parser(
        "train", help="fine-tune a classifier (default: e5-small-ko on the seed set)",
        description="Fine-tune an encoder with its lower layers frozen. With no arguments trains "
                    f"{BUNDLED_DEFAULT} on the seed set into workspace/runs/default.")
    train.add_argument("--data", help="dataset JSONL path or saved dataset name (default: seed)")
    train.add_argument("--base", help=f"bundled name (default {BUNDLED_DEFAULT}), Hugging Face "
                                      "id (e.g. klue/bert-base) or model folder")
    train.add_argument("--freeze-below", type=int, default=None, metavar="K",
                       help="freeze embeddings and encoder layers below K (0 trains all)")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--lr", type=float, default=None, help="peak learning rate")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--max-length", type=int, default=None, help="tokens per text")
    train.add_argument("--patience", type=int, default=None,
                       help="early stopping: epochs without a better val macro-F1 (0 = off)")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--val-frac", type=float, default=None)
    train.add_argument("--test-frac", type=float, default=None)
    train.add_argument("--labels", help="comma-separated label order (default: labels present)")
    train.add_argument("--init-seed", type=int, default=None,
                       help="seed of the head's initialisation and the batch order only "
                            "(default: --seed); the split stays --seed's")
    train.add_argument("--label-smoothing", type=float, default=None, metavar="EPS",
                       help="label smoothing of the training loss (default 0)")
    train.add_argument("--layer-decay", type=float, default=None, metavar="D",
                       help="layer-wise learning-rate decay per layer below the head (default 1)")
    train.add_argument("--reinit-top", type=int, default=None, metavar="N",
                       help="re-initialise the top N encoder layers before training (default 0)")
    train.add_argument("--int8-epochs", type=int, default=None, metavar="N",
                       help="INT8-aware epochs after the FP32 ones: the model learns to compute "
                            "as the integer INT8 file does, distilling from the FP32 model "
                            "(default 1; 0 = a plain FP32 model)")
    train.add_argument("--int8-lr", type=float, default=None,
                       help="peak learning rate of the INT8-aware phase (default 5e-5)")
    train.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: one per core; 1 helps on a busy machine)")
    train.add_argument("--no-cache", dest="cache_frozen", action="store_false", default=None,
                       help="recompute the frozen layers every epoch (slower, same result)")
    train.add_argument("--ignore-saved-split", dest="use_saved_split", action="store_false",
                       default=None, help="split with --val-frac/--test-frac/--seed even when the "
                                          "dataset was saved with a split")
    train.add_argument("--out", help="run folder (default: workspace/runs/default)")
    train.set_defaults(handler=_train)

    predict = subparsers.add_parser(
        "predict", help="label texts with a trained run",
        description="Predict with a run folder: --text prints labels and probabilities; "
                    "--input/--output copies each JSONL line and adds \"pred\" and \"probs\".")
    predict.add_argument("--model", required=True,
                         help="run folder, its model/ folder, an .onnx file or an OpenVINO .xml")
    src = predict.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to classify (repeatable)")
    src.add_argument("--input", help="JSONL with a \"text\" field per line")
    predict.add_argument("--output", help="JSONL to write (required with --input)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.set_defaults(handler=_predict)


_FIELDS = {"data": "data", "base": "base", "freeze_below": "freeze_below", "epochs": "epochs",
           "lr": "learning_rate", "batch_size": "batch_size", "max_length": "max_length",
           "patience": "patience", "seed": "seed", "val_frac": "val_frac",
           "test_frac": "test_frac", "out": "out_dir", "threads": "num_threads",
           "cache_frozen": "cache_frozen", "use_saved_split": "use_saved_split",
           "init_seed": "init_seed", "label_smoothing": "label_smoothing",
           "layer_decay": "layer_decay", "reinit_top": "reinit_top",
           "int8_epochs": "int8_epochs", "int8_lr": "int8_lr"}


def train_config_from_args(args: argparse.Namespace):
    """Only the flags given override TrainConfig's defaults, so both front doors share them."""
    from core.cli import overrides
    from core.labels import parse_labels
    from core.train import TrainConfig

    kwargs = overrides(args, _FIELDS)
    if args.labels:
        kwargs["labels"] = parse_labels(args.labels)
    return TrainConfig(**kwargs)


def _train(args) -> tuple[int, object]:
    return run_train(train_config_from_args(args))


def run_train(config) -> tuple[int, object]:
    """Train with a progress bar and a one-line summary (the CLI and background jobs)."""
    from core.progress import CliProgress
    from core.train import run

    progress = CliProgress("train")
    try:
        result = run(config, on_progress=progress)
    finally:
        progress.close()
    test = f", test macro-F1 {result.test['macro_f1']:.3f}" if result.test else ""
    sys.stdout.write(
        f"saved {result.model_dir} (best epoch {result.best_epoch}/{result.epochs_run}, "
        f"val macro-F1 {result.val['macro_f1']:.3f}{test}; trained {result.trainable_params:,} of "
        f"{result.total_params:,} parameters in {result.train_seconds:.0f}s)\n")
    return 0, {k: v for k, v in vars(result).items() if k != "history"}


def _predict(args) -> tuple[int, object]:
    from core import predict
    from core.runtimes import load

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.input and not args.output:
        raise ConfigError("--input needs --output PATH for the JSONL with predictions")
    if args.output and not args.input:
        raise ConfigError("--output goes with --input; --text prints its predictions")
    runtime = load(args.model)  # a run folder, an .onnx file or an OpenVINO .xml
    if args.input:
        count = predict.predict_jsonl(runtime, args.input, args.output, args.batch_size)
        sys.stdout.write(f"wrote {count} predictions to {args.output}\n")
        return 0, {"output": args.output, "count": count}
    preds = predict.predict(runtime, args.text, args.batch_size)
    rows = [{"text": t, "pred": p.label, "probs": p.probs} for t, p in zip(args.text, preds)]
    for row in rows:  # one JSON object per line, like the --output file
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0, {"predictions": rows}
