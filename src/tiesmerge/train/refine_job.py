"""A whole refine run: the start merge (made when not given), the base and specialists loaded once, the checkpoint
beside the output (resumed when it belongs to this very run), the refined adapter written atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiesmerge.atomic import atomic_output_dir
from tiesmerge.cache import adapter_digest, cache_key
from tiesmerge.calibration.prompts import Prompt, prompts_digest
from tiesmerge.errors import BadInputError
from tiesmerge.merge.recipe import Recipe
from tiesmerge.train import refine as R
from tiesmerge.train.checkpoint import Checkpoint
from tiesmerge.train.refine_output import describe, write_adapter


def checkpoint_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.refine-checkpoint"


def start_merge(spec: Recipe, folder: Path, log: Callable[[str], None]) -> Path:
    """The recipe merged into `folder/start` (kept with the checkpoint, so a resumed run reuses it)."""
    from tiesmerge.merge import driver
    from tiesmerge.merge.job import prepare

    target = folder / "start"
    if (target / "adapter_config.json").is_file():
        return target
    t0 = time.perf_counter()
    driver.run(prepare(spec), target, force=True)
    log(f"start: {spec.method.value} ({spec.space.value} space) merged in {time.perf_counter() - t0:.1f} s")
    return target


def starts_of(start) -> list[Path]:
    """The start given — one merge, or several candidates (refine chooses the one closest to its teachers) — as
    a list (empty: none given)."""
    if start is None:
        return []
    return [Path(start)] if isinstance(start, (str, Path)) else [Path(s) for s in start]


def check_finite_start(start: Path) -> None:
    """A start whose factors hold NaN or ±inf cannot be refined (every loss would be NaN): one line naming it."""
    import torch
    from safetensors import safe_open

    for f in sorted(Path(start).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                if not bool(torch.isfinite(fh.get_tensor(k)).all()):
                    raise BadInputError(f"--start {start}: {k} holds NaN or infinite values — the start merge is "
                                        "broken; make it again (tiesmerge merge) or refine from another merge")


def run_refine(spec: Recipe, prompts: Mapping[str, Sequence[Prompt]], settings: R.RefineSettings, *, base: str,
               start: Path | Sequence[Path] | None, output: Path, force: bool = False, restart: bool = False, device: str = "auto",
               dtype: str = "auto", load_in_4bit: bool = False, log: Callable[[str], None] = lambda m: None,
               progress: Callable[[int, int, str], None] | None = None, command: str | None = None,
               validation: Sequence = ()) -> dict:
    ckpt_dir = checkpoint_dir(Path(output))
    if restart:
        Checkpoint(ckpt_dir, "").remove()
    fresh = not ckpt_dir.exists()
    try:
        start_path, report, run, key = _train(spec, prompts, settings, base, start, ckpt_dir, device, dtype, load_in_4bit,
                                              log, progress, command, validation)
    except BaseException:
        # interrupted or failed before any checkpoint was saved (start-up: the start merge, loading, the teachers):
        # nothing to resume, so nothing is left beside the output
        if fresh and not (ckpt_dir / "checkpoint.json").is_file():
            import shutil

            shutil.rmtree(ckpt_dir, ignore_errors=True)
        raise
    with atomic_output_dir(Path(output), force) as tmp:
        write_adapter(run, start_path, tmp, report)
    Checkpoint(ckpt_dir, key).remove()
    lines = describe({"start": report["start_agreement"], "final": report["final"], "kept": report["kept"],
                      "returned_start": report["returned_start"], "validation": report["validation"],
                      "start_choice": report.get("start_choice")})
    return {"report": report, "lines": lines}


def _train(spec, prompts, settings, base, start, ckpt_dir, device, dtype, load_in_4bit, log, progress, command,
           validation):
    """The start merge, the base and teachers, the training: (start, report, run, checkpoint key)."""
    from tiesmerge.eval.models import load_base

    starts = starts_of(start) or [start_merge(spec, ckpt_dir, log)]
    for s in starts:
        check_finite_start(s)
    adapters = {a.name: a.path for a in spec.adapters}
    key = cache_key("refine", R.REFINE_VERSION, base, dtype, load_in_4bit, settings.as_dict(),
                    [adapter_digest(s) for s in starts],
                    [(n, adapter_digest(p), prompts_digest(prompts[n], settings.prompt_format)) for n, p in adapters.items()],
                    [(q.id, q.domain, q.question, list(q.choices), q.answer) for q in validation])
    model, tok = load_base(base, dtype=dtype, device=device, load_in_4bit=load_in_4bit)
    run = R.prepare(model, tok, starts, adapters, prompts, settings, log, validation)
    start_path = run.start
    try:
        report = R.train(run, settings, Checkpoint(ckpt_dir, key), progress=progress or _plain_progress(log), log=log)
    except KeyboardInterrupt:
        if (ckpt_dir / "checkpoint.json").is_file():
            log(f"refine interrupted; its checkpoint is kept in {ckpt_dir}: run the same command again to resume "
                "(or pass --restart)")
        raise
    report["start_agreement"] = report.pop("start")
    report.update(settings=settings.as_dict(), base=base, start=str(start_path), command=command,
                  start_choice=run.start_choice or None,
                  adapters={n: str(p) for n, p in adapters.items()},
                  prompts={n: len(prompts[n]) for n in adapters}, refine_version=R.REFINE_VERSION)
    return start_path, report, run, key


def _plain_progress(log: Callable[[str], None]) -> Callable[[int, int, str], None]:
    def hook(done: int, total: int, note: str) -> None:
        if done == total or done % 10 == 0:
            log(f"refine step {done}/{total} {note}")

    return hook
