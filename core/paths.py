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


def staging_dir(dest: str | Path) -> Path:
    """A new, empty folder beside ``dest`` to build its replacement in (``.NAME.tmp-XXXXXX``)."""
    import secrets

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(3)}")
    tmp.mkdir()
    return tmp


def swap_dir(new: str | Path, dest: str | Path) -> Path:
    """Put the finished folder ``new`` at ``dest`` by renames, so readers see the old folder or
    the new one, never half of one. The old folder is moved aside (``.NAME.old-XXXXXX``) and
    removed last; a crash between the two renames is undone by ``clean_leftovers``."""
    import secrets
    import shutil

    new, dest = Path(new), Path(dest)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{secrets.token_hex(3)}")
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def clean_leftovers(dest: str | Path) -> list[str]:
    """Remove what an interrupted build of ``dest`` left beside it (staging folders, a folder
    moved aside); if the build died between the two renames of ``swap_dir``, put the old folder
    back. Call it holding the lock that guards ``dest``. Returns what was done."""
    import shutil

    dest = Path(dest)
    done = []
    for path in sorted(dest.parent.glob(f".{dest.name}.*")):
        if ".old-" in path.name and not dest.exists():
            os.replace(path, dest)
            done.append(f"restored {dest.name} from {path.name}")
        elif ".tmp-" in path.name or ".old-" in path.name:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
            done.append(f"removed {path.name}")
    return done
