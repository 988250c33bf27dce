"""`tiesmerge deploy`: a tournament work directory with the four agent files, agents.yaml, the merged adapter
(copied or linked) and outputs/. Every path is built in a staging folder inside DIR, then renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tiesmerge.agents.config import AgentsConfig
from tiesmerge.errors import BadInputError

ADAPTER_DIR = "adapter"
OWNED = ("agents", "agents.yaml", ADAPTER_DIR)  # what a deploy writes (outputs/ is created, never replaced)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "merge_report.json")

_ENTRY = '''"""Tournament entry point written by `tiesmerge deploy`:
    python -m agents.{kind}_agent {usage}
Settings: agents.yaml beside the agents/ folder (agen.yaml / qgen.yaml there override generation settings)."""

from agents.{kind}_model import CONFIG, main

if __name__ == "__main__":
    raise SystemExit(main())
'''

_MODEL = '''"""The {kind} model written by `tiesmerge deploy`: the base plus the merged adapter named in agents.yaml,
loaded once per process by tiesmerge (`pip install tiesmerge`)."""

from pathlib import Path

from tiesmerge.agents import cli, runtime

CONFIG = Path(__file__).resolve().parent.parent / "agents.yaml"


def load():
    """(config, loaded model) — the model is warmed up and ready."""
    return runtime.load(CONFIG)


def main(argv=None) -> int:
    return cli.{kind}_main(argv, default_config=CONFIG)
'''

USAGE = {"answer": "--input_file outputs/filtered_questions.json --output_file outputs/answers.json --verbose",
         "question": "--output_file outputs/questions.json --num_questions 20 --verbose"}


@dataclass(frozen=True)
class Deployment:
    root: Path
    config: Path
    adapter: Path
    linked: bool


def check_adapter(merged: Path) -> None:
    if not merged.is_dir():
        raise BadInputError(f"{merged} is not a folder; pass the merged adapter folder (tiesmerge merge -o …)")
    cfg = merged / "adapter_config.json"
    if not cfg.is_file():
        raise BadInputError(f"{merged} has no adapter_config.json; pass a PEFT adapter folder")
    if not (merged / "adapter_model.safetensors").is_file():
        raise BadInputError(f"{merged} has no adapter_model.safetensors (pickled adapter_model.bin is refused)")
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{cfg} is not valid JSON: {exc}") from None


def base_reference(base: str) -> str:
    """A local base folder becomes an absolute path; a hub id or `smollm2` is kept as given."""
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInputError(f"--base {base} has no config.json; pass a model folder, a hub id or smollm2")
        return str(path.resolve())
    if base.startswith((".", "/", "~")) or os.sep + os.sep in base or base.count("/") > 1:
        raise BadInputError(f"--base {base} does not exist; pass a model folder, a hub id (org/name) or smollm2")
    return base


def agents_yaml(base: str, load_in_4bit: bool | None) -> str:
    cfg = AgentsConfig(base=base, adapter=ADAPTER_DIR, load_in_4bit=load_in_4bit)
    body = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    return ("# tiesmerge agents: edit freely; `python -m agents.answer_agent --help` lists the flags.\n"
            "# load_in_4bit null = NF4 on CUDA, full precision on CPU. Deadlines are per item, under the 6 s / 10 s limits.\n"
            + body)


def deploy(merged: Path, base: str, to: Path, *, load_in_4bit: bool | None = None, link: bool = False,
           force: bool = False) -> Deployment:
    merged = Path(merged)
    check_adapter(merged)
    base_ref = base_reference(base)
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise BadInputError(f"--to {to} is a file; pass a folder")
    present = [name for name in OWNED if (to / name).exists() or (to / name).is_symlink()]
    if present and not force:
        raise BadInputError(f"{to} already holds a deployment ({', '.join(present)}); pass --force to replace it")
    to.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".tiesmerge-deploy-", dir=to))
    try:
        pkg = stage / "agents"
        pkg.mkdir()
        (pkg / "__init__.py").write_text('"""Tournament agents written by `tiesmerge deploy`."""\n')
        for kind in ("answer", "question"):
            (pkg / f"{kind}_agent.py").write_text(_ENTRY.format(kind=kind, usage=USAGE[kind]))
            (pkg / f"{kind}_model.py").write_text(_MODEL.format(kind=kind))
        (stage / "agents.yaml").write_text(agents_yaml(base_ref, load_in_4bit))
        if link:
            os.symlink(merged.resolve(), stage / ADAPTER_DIR, target_is_directory=True)
        else:
            (stage / ADAPTER_DIR).mkdir()
            for name in ADAPTER_FILES:
                if (merged / name).is_file():
                    shutil.copy2(merged / name, stage / ADAPTER_DIR / name)
        old = stage / ".replaced"
        old.mkdir()
        for name in OWNED:
            if (to / name).exists() or (to / name).is_symlink():
                os.replace(to / name, old / name)
            os.replace(stage / name, to / name)
        (to / "outputs").mkdir(exist_ok=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Deployment(to.resolve(), to / "agents.yaml", to / ADAPTER_DIR, link)
