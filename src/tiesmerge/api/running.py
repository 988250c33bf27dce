"""The longer jobs as functions: `tiesmerge.sweep` (a merge-settings sweep with per-domain evaluation),
`tiesmerge.deploy` (the tournament work directory), `tiesmerge.demo` (the cached demo pipeline),
`tiesmerge.train_adapter` (a small specialist), `tiesmerge.build_data` (the built-in question sets) and
`tiesmerge.create_examples` (a synthetic adapter set). The CLI's commands of those names call these."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from tiesmerge.atomic import atomic_output_dir, check_output_dir, ensure_free_space, refuse_overlap
from tiesmerge.errors import BadInputError
from tiesmerge.extras import Extra, require

PathLike = Union[str, Path]
ProgressFactory = Callable[[int, str, str], Any]  # (total, label, unit) → a context manager yielding a hook


def _log(message: str) -> None:
    logging.getLogger("tiesmerge").info(message)


def _no_progress(total: int, label: str, unit: str):
    import contextlib

    return contextlib.nullcontext(None)


def sweep(config: PathLike, *, out: PathLike, executor: str = "local", ray_address: Optional[str] = None,
          force: bool = False, progress: ProgressFactory = _no_progress, log: Callable[[str], None] = _log):
    """Sweep a TIES merge's density × λ (and rank, space) on a sweep YAML or a shipped preset (`"demo"`), score every
    point on the validation split, pick the best by the config's metric and score it on test. Resumable: finished
    points are kept in OUT/points.jsonl. Returns a SweepRun (`.rows`, `.best`, `.test`, `.config`, …)."""
    require(Extra.sweep, "tiesmerge sweep")
    from tiesmerge.demo.specialists import preset_specialists
    from tiesmerge.sweep.config import load_sweep_config
    from tiesmerge.sweep.runner import run_sweep

    cfg = load_sweep_config(config)
    return run_sweep(cfg, Path(out), executor=executor, ray_address=ray_address, force=force, progress=progress,
                     log=log, preset_trainer=preset_specialists)


def deploy(merged: PathLike, *, base: str, to: PathLike, load_in_4bit: Optional[bool] = None, link: bool = False,
           force: bool = False, fold: bool = False, bank_size: int = 60,
           progress: Optional[Callable[[int, int, str], None]] = None, log: Callable[[str], None] = _log):
    """Write a self-contained tournament work directory (agents/, agents.yaml, fallback_bank.json, the adapter —
    or with `fold=True` the base with it folded in — and outputs/). Returns a Deployment (`.root`, `.adapter`, …)."""
    require(Extra.agents, "tiesmerge deploy")
    from tiesmerge.adapters import hub
    from tiesmerge.agents.deploy import deploy as run_deploy

    if isinstance(bank_size, bool) or not isinstance(bank_size, int) or bank_size < 1:
        raise BadInputError(f"--bank-size {bank_size!r}: give a whole number of questions, at least 1")
    merged = hub.resolve(str(merged), "adapter", log=log)
    fold_writer = None
    if fold:
        from tiesmerge.export.model import export_model

        def fold_writer(out: Path, base_ref: str) -> None:
            if not Path(base_ref).is_dir():
                raise BadInputError(f"--fold needs a local base folder (got {base!r}); download the base first")
            export_model(merged, Path(base_ref), out, progress=progress)

    return run_deploy(merged, base, Path(to), load_in_4bit=load_in_4bit, link=link, force=force,
                      bank_size=bank_size, fold=fold_writer)


def demo(*, out: PathLike = "tiesmerge-demo", config: Optional[PathLike] = None, limit: Optional[int] = None,
         force: bool = False, progress: ProgressFactory = _no_progress, log: Callable[[str], None] = _log):
    """The demo: four RSLoRA specialists on the embedded SmolLM2-135M, merged (TIES, task arithmetic, PEFT, refine)
    and evaluated on the built-in test split; cached under the settings' keys. Returns a DemoRun (`.result`,
    `.checks`, `.paths`, `.stage_seconds`, `.cached`, `.config`)."""
    require(Extra.eval, "tiesmerge demo")
    from tiesmerge.demo.config import load_demo_config
    from tiesmerge.demo.pipeline import run_demo

    cfg = load_demo_config(Path(config) if config is not None else None)
    if limit is not None:
        cfg = cfg.model_copy(update={"limit": limit})
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BadInputError(f"--out {out} exists and is not empty; pass --force to replace it")
    return run_demo(cfg, out, force=force, progress=progress, log=log)


def train_adapter(*, base: str, domain: str, out: PathLike, data: Optional[PathLike] = None, steps: int = 60,
                  rank: int = 16, alpha: float = 32.0, lr: float = 2e-4, batch_size: int = 8, seed: int = 0,
                  target: Any = "letter", device: str = "auto", force: bool = False,
                  progress: Optional[Callable[[int, int, str], None]] = None) -> dict:
    """Train one RSLoRA specialist on all seven projections (a small trainer for demos and merge tests) from
    `data` (a question file) or the built-in train split of `domain`. Returns the adapter's card (loss, timings)."""
    require(Extra.eval, "tiesmerge adapters train")
    from tiesmerge.eval.models import load_base
    from tiesmerge.train.trainer import TrainSettings, TrainTarget
    from tiesmerge.train.trainer import train_adapter as train

    if data is not None:
        from tiesmerge.eval.loaders import load_questions

        questions, source = load_questions(Path(data), domain).questions, str(data)
    else:
        from tiesmerge.eval.builtin.build import DOMAINS, build

        if domain not in DOMAINS:
            raise BadInputError(f"--domain {domain!r} has no built-in set ({', '.join(DOMAINS)}); pass --data FILE")
        questions, source = build(1000, 0, domains=(domain,))["train"][domain], "builtin:train"
    out = Path(out)
    check_output_dir(out, force)
    refuse_overlap(out, {"the training data": Path(data) if data is not None else None,
                         "the base model": Path(base) if Path(base).is_dir() else None},
                   "write the adapter to a separate folder")
    settings = TrainSettings(steps=steps, rank=rank, alpha=alpha, lr=lr, batch_size=batch_size, seed=seed,
                             warmup_steps=max(1, steps // 10),
                             target=TrainTarget.parse(getattr(target, "value", target), "--target"))
    model, tokenizer = load_base(base, device=device, dtype="float32")
    with atomic_output_dir(out, force) as tmp:
        return train(model, tokenizer, questions, settings, tmp,
                     progress=(lambda s, t, loss: progress(s, t, f"loss {loss:.3f}")) if progress else None,
                     card={"base": base, "domain": domain, "data": source})


def build_data(out: PathLike, *, n_per_domain: int = 1000, seed: int = 0, test_per_domain: Optional[int] = None,
               force: bool = False) -> dict:
    """The built-in verified question sets as OUT/{split}/{domain}.jsonl and manifest.json (returned)."""
    require(Extra.eval, "tiesmerge data build")
    from tiesmerge.eval.builtin.build import build, held_out_test, write

    sets = build(n_per_domain, seed)
    if test_per_domain is not None:
        sets["test"] = held_out_test(sets, test_per_domain, seed)
    with atomic_output_dir(Path(out), force) as tmp:
        return write(sets, tmp, seed=seed, n_per_domain=n_per_domain)


def create_examples(out: PathLike, *, shape: str = "smollm2-135m", layers: Optional[int] = None,
                    names: Sequence[str] = ("math", "code", "stem", "humanities"), rank: int = 16,
                    alpha: float = 32.0, rslora: bool = True, dtype: str = "float32", seed: int = 0,
                    force: bool = False) -> Path:
    """N synthetic PEFT adapters at a real model's shapes and a TIES recipe for them (OUT/recipe.yaml, returned)."""
    import yaml

    from tiesmerge.adapters.synthetic import SHAPES, write_synthetic_adapter
    from tiesmerge.dtypes import FLOAT_DTYPES

    if isinstance(names, str):
        raise TypeError(f"names must be a list of adapter names, not the string {names!r}")
    if shape not in SHAPES:
        raise BadInputError(f"--shape {shape!r} is unknown; choose one of {', '.join(SHAPES)}")
    if dtype not in FLOAT_DTYPES:
        raise BadInputError(f"--dtype {dtype!r} is unknown; choose float32, bfloat16 or float16")
    if len(set(names)) != len(names):
        raise BadInputError("--name values must be distinct")
    model = SHAPES[shape]
    out = Path(out)
    target = check_output_dir(out, force)
    per_adapter = sum((d_out + d_in) * rank for d_out, d_in in model.modules(layers).values())
    ensure_free_space(target.parent, per_adapter * FLOAT_DTYPES[dtype].itemsize * len(names), f"{len(names)} adapters")
    with atomic_output_dir(out, force) as tmp:
        for i, name in enumerate(names):
            write_synthetic_adapter(tmp / name, model, layers=layers, r=rank, alpha=alpha, rslora=rslora,
                                    adapter_seed=seed * 1000 + i + 1, set_seed=seed, dtype=FLOAT_DTYPES[dtype])
        recipe = {"method": "ties", "parameters": {"density": 0.2, "lambda": 1.0, "sign": "sum"},
                  "adapters": [{"name": n, "path": n, "weight": round(1 / len(names), 6)} for n in names],
                  "output": {"rank": rank, "dtype": "auto"}}
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return out / "recipe.yaml"


def example_shapes() -> dict[str, int]:
    """The model shapes `create_examples` knows: name → its number of layers."""
    from tiesmerge.adapters.synthetic import SHAPES

    return {name: shape.layers for name, shape in SHAPES.items()}


def demo_tables():
    """The demo's table builders (rows of the specialist × domain matrix, the checks, the merges)."""
    from tiesmerge.demo import table

    return table
