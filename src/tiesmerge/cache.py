"""A keyed artifact cache under the user cache dir, shared by eval, sweep and the demo: a changed setting gets a
new key, so it rebuilds; entries are written atomically."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from tiesmerge.atomic import atomic_output_dir, write_file


def cache_dir() -> Path:
    """Where tiesmerge caches: $TIESMERGE_CACHE, else the user cache dir (platformdirs when installed)."""
    env = os.environ.get("TIESMERGE_CACHE")
    if env:
        return Path(env)
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "tiesmerge"
    return Path(platformdirs.user_cache_dir("tiesmerge"))


def artifact_root() -> Path:
    """The default root of keyed artifacts (specialists, merges, evaluations)."""
    return cache_dir() / "demo"


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (pydantic models by their dump)."""
    def plain(p: Any) -> Any:
        return p.model_dump(mode="json", by_alias=True) if isinstance(p, BaseModel) else p

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_dir(kind: str, name: str, key: str, build: Callable[[Path], None], root: Path | None = None) -> tuple[Path, bool]:
    """`root/kind/name-key`, built by `build(tmp_dir)` into a temp dir and renamed when complete.

    Returns (path, hit). An interrupted build leaves nothing behind under the final name."""
    target = (root or artifact_root()) / kind / f"{name}-{key}"
    if (target / ".complete").is_file():
        return target, True
    with atomic_output_dir(target, force=True) as tmp:
        build(tmp)
        (tmp / ".complete").write_text(key + "\n")
    return target, False


def read_json(kind: str, name: str, key: str, root: Path | None = None) -> Any | None:
    path = (root or artifact_root()) / kind / f"{name}-{key}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged entry is recomputed


def write_json(kind: str, name: str, key: str, data: Any, root: Path | None = None) -> Path:
    """Write atomically (temp file, then rename)."""
    folder = (root or artifact_root()) / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{key}.json"
    return write_file(path, json.dumps(data))


def adapter_digest(path: Path) -> str:
    """Content hash of a PEFT adapter (config + weights): the key of anything computed from it."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with open(Path(path) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
