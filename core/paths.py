"""Where things live. The workspace holds every build output (git-ignored)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_PATH = REPO_ROOT / "data" / "seed" / "seed.jsonl"
WORKSPACE_ENV = "STUDIO_WORKSPACE"


_NAME = re.compile(r"^[\w\-. ]{1,80}$")


def check_name(name: str, what: str = "name") -> str:
    """A workspace file or folder name: letters, digits, '-', '_', '.', spaces; no paths."""
    from core.errors import ConfigError

    name = name.strip()
    if not _NAME.match(name) or name.startswith("."):
        raise ConfigError(f"{what} {name!r} is not allowed: use letters, digits, '-', '_', '.' "
                          "or spaces (at most 80 characters, not starting with '.')")
    return name


def workspace() -> Path:
    """The workspace root: $STUDIO_WORKSPACE, else ./workspace in the repository."""
    return Path(os.environ.get(WORKSPACE_ENV) or REPO_ROOT / "workspace")


def sub(name: str) -> Path:
    path = workspace() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir() -> Path:
    return sub("datasets")


def runs_dir() -> Path:
    return sub("runs")


def jobs_dir() -> Path:
    return sub("jobs")


def base_models_dir() -> Path:
    return sub("base_models")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside ``path`` then rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
