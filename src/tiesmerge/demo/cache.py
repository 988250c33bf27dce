"""A keyed artifact cache under the user cache dir: a changed recipe gets a new key, so it rebuilds."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from tiesmerge.adapters.writer import atomic_output_dir
from tiesmerge.eval.models import cache_dir


def demo_cache_root() -> Path:
    return cache_dir() / "demo"


def cached_dir(kind: str, name: str, key: str, build: Callable[[Path], None], root: Path | None = None) -> tuple[Path, bool]:
    """`root/kind/name-key`, built by `build(tmp_dir)` into a temp dir and renamed when complete.

    Returns (path, hit). An interrupted build leaves nothing behind under the final name."""
    target = (root or demo_cache_root()) / kind / f"{name}-{key}"
    if (target / ".complete").is_file():
        return target, True
    with atomic_output_dir(target, force=True) as tmp:
        build(tmp)
        (tmp / ".complete").write_text(key + "\n")
    return target, False


def read_json(kind: str, name: str, key: str, root: Path | None = None) -> Any | None:
    path = (root or demo_cache_root()) / kind / f"{name}-{key}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged entry is recomputed


def write_json(kind: str, name: str, key: str, data: Any, root: Path | None = None) -> Path:
    """Write atomically (temp file, then rename)."""
    folder = (root or demo_cache_root()) / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{key}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def adapter_digest(path: Path) -> str:
    """Content hash of a PEFT adapter (config + weights): the key of anything computed from it."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with open(Path(path) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
