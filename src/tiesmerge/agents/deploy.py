"""`tiesmerge deploy`: a self-contained tournament work directory.

DIR/agents/ holds the four entry files, `runtime/` (a verbatim copy of tiesmerge.portable: standard library,
torch, transformers, peft, bitsandbytes and yaml only — tiesmerge need not be installed where the agents run) and
nothing else; DIR/agents.yaml the settings; DIR/fallback_bank.json the verified fallback questions (data, built and
checked here); DIR/adapter/ the merged adapter (copied or linked) — or DIR/model/, the base with the adapter folded
in, when the caller passes a `fold` writer. Every path is built in a staging folder inside DIR, then renamed into
place; outputs/ is created and never replaced."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tiesmerge.adapters.base_fit import check_reader_fits
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.agents.fallback import build_bank
from tiesmerge.atomic import check_name_length, disk_error, refuse_overlap, user_path
from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.eval.models import EMBEDDED, embedded_base
from tiesmerge.portable import limits
from tiesmerge.portable.config import AgentsConfig, dump_yaml

PORTABLE = Path(__file__).resolve().parents[1] / "portable"
ADAPTER_DIR, MODEL_DIR, BANK_FILE = "adapter", "model", "fallback_bank.json"
OWNED = ("agents", "agents.yaml", BANK_FILE, ADAPTER_DIR, MODEL_DIR)  # what a deploy writes (outputs/ is kept)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "merge_report.json")
DEFAULT_BANK_SIZE = 60

_ENTRY = '''"""Tournament entry point written by `tiesmerge deploy`:
    python -m agents.{kind}_agent {usage}
Settings: agents.yaml beside the agents/ folder (agen.yaml / qgen.yaml there override generation settings)."""

from agents.{kind}_model import CONFIG, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
'''

_MODEL = '''"""The {kind} model written by `tiesmerge deploy`: the base and merged adapter named in agents.yaml, loaded
once per process by agents/runtime (torch, transformers, peft, bitsandbytes, pyyaml — no tiesmerge needed)."""

from pathlib import Path

from agents.runtime import cli

CONFIG = Path(__file__).resolve().parent.parent / "agents.yaml"


def load():
    """(config, its folder, the loaded model) — warmed up and ready."""
    return cli.load(CONFIG)


def main(argv=None) -> int:
    return cli.{kind}_main(argv, default_config=CONFIG)
'''

USAGE = {"answer": "--input_file outputs/filtered_questions.json --output_file outputs/answers.json --verbose",
         "question": "--output_file outputs/questions.json --num_questions 20 --verbose"}


@dataclass(frozen=True)
class Deployment:
    root: Path
    config: Path
    adapter: Path | None
    model: Path | None
    linked: bool
    bank_questions: int


def check_adapter(merged: Path) -> AdapterReader:
    """The merged adapter read and checked whole (config values, every tensor's header, the file's length), so a
    broken or truncated adapter is refused before anything is written."""
    if not merged.is_dir():
        raise BadInputError(f"{merged} is not a folder; pass the merged adapter folder (tiesmerge merge -o …)")
    if not (merged / "adapter_config.json").is_file():
        raise BadInputError(f"{merged} has no adapter_config.json; pass a PEFT adapter folder")
    if not (merged / "adapter_model.safetensors").is_file():
        raise BadInputError(f"{merged} has no adapter_model.safetensors (pickled adapter_model.bin is refused)")
    cfg = merged / "adapter_config.json"
    as_bad_input(limits.read_json)(cfg, "the merged adapter's config")
    return AdapterReader(merged, "merged")


def base_reference(base: str) -> str:
    """A local base folder becomes an absolute path; `smollm2` its cached folder (the agents do not convert
    GGUF); a hub id is kept as given."""
    if base in EMBEDDED:
        return str(embedded_base(base).resolve())
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInputError(f"--base {base} has no config.json; pass a model folder, a hub id or smollm2")
        return str(path.resolve())
    if base.startswith((".", "/", "~")) or os.sep + os.sep in base or base.count("/") > 1:
        raise BadInputError(f"--base {base} does not exist; pass a model folder, a hub id (org/name) or smollm2")
    return base


def agents_yaml(cfg: AgentsConfig) -> str:
    return ("# tiesmerge agents: edit freely; `python -m agents.answer_agent --help` lists the flags.\n"
            "# load_in_4bit null = NF4 on CUDA, full precision on CPU. Deadlines hold per batch of questions,\n"
            "# under the tournament's 6 s / 10 s limits.\n" + dump_yaml(cfg))


def write_agents(pkg: Path) -> None:
    """The agents package: entry files plus the portable runtime, copied file by file (no caches)."""
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Tournament agents written by `tiesmerge deploy` (no tiesmerge import)."""\n')
    for kind in ("answer", "question"):
        (pkg / f"{kind}_agent.py").write_text(_ENTRY.format(kind=kind, usage=USAGE[kind]))
        (pkg / f"{kind}_model.py").write_text(_MODEL.format(kind=kind))
    runtime = pkg / "runtime"
    runtime.mkdir()
    for src in sorted(PORTABLE.glob("*.py")):
        shutil.copy2(src, runtime / src.name)


def deploy(merged: Path, base: str, to: Path, *, load_in_4bit: bool | None = None, link: bool = False,
           force: bool = False, bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0,
           fold: Callable[[Path, str], None] | None = None) -> Deployment:
    """Write the work directory. With `fold(out_dir, base_ref)`, the caller writes the base with the adapter
    folded in to out_dir, and the agents load that one model (no adapter at run time)."""
    merged = user_path(merged, "adapter")
    reader = check_adapter(merged)
    if bank_size < 1:
        raise BadInputError("--bank-size must be at least 1")
    base_ref = base_reference(base)
    to = user_path(to, "--to")
    check_name_length(to, "--to")
    if to.exists() and not to.is_dir():
        raise BadInputError(f"--to {to} is a file; pass a folder")
    refuse_overlap(to, {"the merged adapter": merged, "the base model": base_ref if Path(base_ref).is_dir() else None},
                   "deploy to a separate folder")
    if Path(base_ref).is_dir():
        check_reader_fits(reader, Path(base_ref), f"adapter {merged}")
    present = [name for name in OWNED if (to / name).exists() or (to / name).is_symlink()]
    if present and not force:
        raise BadInputError(f"{to} already holds a deployment ({', '.join(present)}); pass --force to replace it")
    created = [p for p in (to, *to.parents) if not p.exists()]
    try:
        to.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".tiesmerge-deploy-", dir=to))
    except OSError as exc:
        raise (disk_error(exc, to) or exc) from None
    try:
        write_agents(stage / "agents")
        bank = build_bank(bank_size, seed)
        (stage / BANK_FILE).write_text(json.dumps(bank, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if fold is not None:
            fold(stage / MODEL_DIR, base_ref)
            cfg = AgentsConfig(base=MODEL_DIR, adapter=None, load_in_4bit=load_in_4bit, bank=BANK_FILE)
        else:
            cfg = AgentsConfig(base=base_ref, adapter=ADAPTER_DIR, load_in_4bit=load_in_4bit, bank=BANK_FILE)
            if link:
                os.symlink(merged.resolve(), stage / ADAPTER_DIR, target_is_directory=True)
            else:
                (stage / ADAPTER_DIR).mkdir()
                for name in ADAPTER_FILES:
                    if (merged / name).is_file():
                        shutil.copy2(merged / name, stage / ADAPTER_DIR / name)
        (stage / "agents.yaml").write_text(agents_yaml(cfg))
        old = stage / ".replaced"
        old.mkdir()
        for name in OWNED:
            if (to / name).exists() or (to / name).is_symlink():
                os.replace(to / name, old / name)
            if (stage / name).exists() or (stage / name).is_symlink():
                os.replace(stage / name, to / name)
        (to / "outputs").mkdir(exist_ok=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # the folders this run made, innermost first, if nothing else is in them
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    n = sum(len(v) for v in bank["questions"].values())
    return Deployment(to.resolve(), to / "agents.yaml", None if fold else to / ADAPTER_DIR,
                      to / MODEL_DIR if fold else None, link and fold is None, n)
