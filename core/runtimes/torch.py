"""PyTorch eager adapter (the baseline every other runtime is compared with)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import ModelError
from core.runtimes.base import Runtime


class TorchRuntime(Runtime):
    name = "pytorch"

    def __init__(self, path: str | Path, max_length: int | None = None, threads: int | None = None,
                 device: str = "cpu", half: bool = False, attn_implementation: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification

        super().__init__(path, max_length)
        if threads:
            torch.set_num_threads(threads)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        try:
            model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load the model in {self.model_dir}: {exc}") from exc
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if half:
            self.model = self.model.half()
            self.precision = "fp16"

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feed = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
            return self.model(**feed).logits.float().cpu().numpy()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.model_dir.glob("*.safetensors")) or \
            sum(p.stat().st_size for p in self.model_dir.glob("*.bin"))
