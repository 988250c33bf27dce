"""Hugging Face Hub ids where a folder is expected: `org/name` or `org/name@revision` resolves through
huggingface_hub's cache (downloading what is missing, unless HF_HUB_OFFLINE=1). A local folder of that name wins.
Every resolution is reported in one line, so a run says which copy it used."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from tiesmerge.atomic import user_path
from tiesmerge.errors import BadInputError

# org/name[@revision]: the Hub's repo id rules (letters, digits, - _ .), one slash
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<rev>[\w./-]{1,200}))?$")
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "*.md", "*.json"]

Log = Callable[[str], None]


def hub_id(ref: str) -> tuple[str, str | None] | None:
    """(repo, revision) when `ref` is shaped like a Hub id, else None."""
    m = HUB_ID.match(ref)
    if m is None or ref.startswith((".", "/", "~")) or ".." in ref:
        return None
    return m["repo"], m["rev"]


def cache_dir() -> str:
    """huggingface_hub's cache folder, read from the environment now (its own constant is fixed at import):
    HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return str(Path(env[key]).expanduser())
    if env.get("HF_HOME"):
        return str(Path(env["HF_HOME"]).expanduser() / "hub")
    xdg = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return str(xdg / "huggingface" / "hub")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(ref: str | Path, what: str, *, base_dir: Path | None = None, files: list[str] | None = ADAPTER_FILES,
            log: Log | None = None) -> Path:
    """The folder `ref` names: a local path if one exists (relative to base_dir when given), else the Hub id's
    snapshot in the cache. Anything else comes back unchanged, for the reader to report."""
    text = str(ref)
    local = user_path(text, what) if text.startswith("~") else Path(text)
    if base_dir is not None and not local.is_absolute():
        local = base_dir / local
    parsed = hub_id(text)
    if local.exists() or parsed is None:
        if parsed is not None and log is not None:
            log(f"{what} {text}: using the local folder {local} (it shadows the Hub id of that name)")
        return local
    repo, revision = parsed
    from tiesmerge.extras import installed

    if not installed("huggingface_hub"):
        raise BadInputError(f"{what} {text}: no such folder, and reading Hub ids needs huggingface_hub "
                            "(pip install huggingface_hub, or tiesmerge[eval])")
    from huggingface_hub import snapshot_download

    cache = cache_dir()
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=offline(),
                                   allow_patterns=files)
    except Exception as exc:  # huggingface_hub's errors differ across versions; all of them mean "not available"
        raise BadInputError(_hub_error(what, text, repo, revision, exc)) from None
    if log is not None:
        log(f"{what} {text}: from the Hugging Face cache ({folder})")
    return Path(folder)


def _hub_error(what: str, text: str, repo: str, revision: str | None, exc: Exception) -> str:
    name = type(exc).__name__
    fetch = f"huggingface-cli download {repo}" + (f" --revision {revision}" if revision else "")
    if offline() or name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return (f"{what} {text}: not in the Hugging Face cache and HF_HUB_OFFLINE=1 (or no network); download it "
                f"first ({fetch}) or give a local folder")
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return f"{what} {text}: no such Hub repository (or it is private/gated: log in with huggingface-cli login)"
    if name == "RevisionNotFoundError":
        return f"{what} {text}: the repository has no revision {revision!r}"
    return f"{what} {text}: cannot fetch it from the Hub ({name}: {str(exc).splitlines()[0][:160]})"
