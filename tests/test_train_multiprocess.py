"""The training loop run as 2 processes on the CPU (gloo), against one process with the same
global batch: the same model within a stated tolerance, one model folder and metrics.json.

The processes meet through a file (core.train's STUDIO_DIST_INIT), not torchrun's TCP store, which
listens on every interface; gloo's own sockets are kept on loopback (GLOO_SOCKET_IFNAME=lo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core import paths

# Two processes sum the same gradients in another order: weights drift by float rounding only.
WEIGHT_ATOL = 1e-4


def _train_cmd(base, data, out) -> list[str]:
    return [sys.executable, "-m", "core", "train", "--base", str(base), "--data", str(data),
            "--out", str(out), "--epochs", "2", "--freeze-below", "1", "--batch-size", "16",
            "--max-length", "48", "--patience", "0", "--threads", "1", "--lr", "5e-4",
            # the FP32 loop: an INT8-aware epoch would round both runs' weights onto the INT8
            # grid, where float drift of 1e-6 can land a weight one grid step apart
            "--int8-epochs", "0"]


@pytest.fixture(scope="module")
def no_dropout_base(tiny_e5_dir, tmp_path_factory):
    """The tiny encoder without dropout, so both runs draw no random numbers while training."""
    base = tmp_path_factory.mktemp("nodrop") / "base"
    shutil.copytree(tiny_e5_dir, base)
    cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (base / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return base


def test_two_processes_train_the_same_model_as_one(no_dropout_base, seven_label_dataset,
                                                   tmp_path):
    from safetensors.numpy import load_file

    env = {**os.environ, paths.WORKSPACE_ENV: str(tmp_path / "ws"), "GLOO_SOCKET_IFNAME": "lo",
           "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run(_train_cmd(no_dropout_base, seven_label_dataset, single), env=env,
                   check=True, capture_output=True, timeout=300, cwd=paths.REPO_ROOT)
    multi = tmp_path / "multi"
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [subprocess.Popen(_train_cmd(no_dropout_base, seven_label_dataset, multi),
                              env={**env, "STUDIO_DIST_INIT": init, "RANK": str(rank),
                                   "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                   "LOCAL_WORLD_SIZE": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              cwd=paths.REPO_ROOT) for rank in (0, 1)]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]

    one, two = (json.loads((run / "metrics.json").read_text(encoding="utf-8"))
                for run in (single, multi))
    assert one["processes"] == 1 and two["processes"] == 2
    # Each process computed half of every global batch of 16.
    assert two["examples_seen"] == pytest.approx(one["examples_seen"] / 2, abs=2)
    assert two["split_sizes"] == one["split_sizes"]
    for a, b in zip(one["history"], two["history"]):
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-5)
        assert b["val_macro_f1"] == pytest.approx(a["val_macro_f1"])
    w1, w2 = (load_file(str(run / "model" / "model.safetensors")) for run in (single, multi))
    assert w1.keys() == w2.keys()
    assert max(float(np.abs(w1[k] - w2[k]).max()) for k in w1) <= WEIGHT_ATOL
    # One run folder, written once: no second copy, no staging left behind.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("multi", ".multi"))) \
        == ["multi"]
