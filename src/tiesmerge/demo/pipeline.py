"""The demo, end to end: base → four specialists → five merges (+ PEFT's with its scale corrected) → one evaluation → tables and
files.

Every stage is cached by key (see cache.py), so a second run with the same config reads everything back."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tiesmerge.atomic import atomic_output_dir, check_output_dir, refuse_overlap
from tiesmerge.cache import adapter_digest, cache_dir
from tiesmerge.demo import table
from tiesmerge.demo.config import DemoConfig
from tiesmerge.demo.evaluation import evaluate_targets
from tiesmerge.demo.merges import (
    SAME_DELTA_RTOL,
    delta_distance,
    peft_scaling_fixed,
    peft_ties_svd,
    refined_merge,
    tiesmerge_merge,
)
from tiesmerge.demo.specialists import train_specialists
from tiesmerge.eval.models import scoring_dtype
from tiesmerge.eval.report import EvalResult, Target, write_outputs
from tiesmerge.progress import ProgressFactory


@dataclass
class DemoRun:
    result: EvalResult
    checks: list[table.SpecialistCheck]
    paths: dict[str, str]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)
    config: Any = None  # the DemoConfig it ran


def run_demo(config: DemoConfig, out: Path, *, force: bool, progress: ProgressFactory, log: Callable[[str], None],
             cache_root: Path | None = None) -> DemoRun:
    from tiesmerge.eval.builtin.build import build
    from tiesmerge.eval.models import EMBEDDED, embedded_base

    check_output_dir(out, force)  # before 19 minutes of work, not after
    local_base = Path(config.base).expanduser() if config.base not in EMBEDDED else None
    refuse_overlap(out, {"the tiesmerge cache (base, specialists, merges)": cache_root or cache_dir(),
                         "the base model": local_base if local_base is not None and local_base.is_dir() else None},
                   "write the demo's results to a separate folder")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    base_path = str(embedded_base(config.base, log)) if config.base in EMBEDDED else config.base
    sets = build(config.n_per_domain, config.data_seed, domains=config.domains)
    seconds["base and data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    specs = train_specialists(config, {d: sets["train"][d] for d in config.domains}, progress, log, cache_root)
    seconds["specialists"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    merged: dict[str, Path] = {}
    digests = {d: adapter_digest(p) for d, p in specs.items()}  # once: every merge's key uses them
    for method in ("ties", "task_arithmetic", config.subspace_method):
        merged[method], hit = tiesmerge_merge(config, specs, digests, method, progress, cache_root)
        if hit:
            log(f"reused {method} merge: {merged[method]}")
    if config.refine_steps:
        starts = [merged[m] for m in ("ties", "task_arithmetic", config.subspace_method)]
        merged["refine"], hit = refined_merge(config, specs, digests, starts,
                                              {d: sets["train"][d] for d in config.domains}, log, cache_root,
                                              {d: sets["validation"][d][:config.refine_validation]
                                               for d in config.domains})
        if hit:
            log(f"reused refined merge: {merged['refine']}")
    merged["peft_ties_svd"], hit = peft_ties_svd(config, specs, digests, log, cache_root)
    if hit:
        log(f"reused peft_ties_svd merge: {merged['peft_ties_svd']}")
    merged["peft_ties_svd_fixed"], _ = peft_scaling_fixed(merged["peft_ties_svd"], cache_root)
    same_as = {}
    distance = delta_distance(merged["peft_ties_svd_fixed"], merged["ties"])
    if distance <= SAME_DELTA_RTOL:
        same_as["peft_ties_svd_fixed"] = "ties"
        log(f"PEFT ties_svd with its scaling corrected has tiesmerge TIES's ΔW (relative distance {distance:.1e} "
            f"≤ {SAME_DELTA_RTOL:g} in every module): it takes TIES's predictions instead of being scored again")
    else:
        log(f"PEFT ties_svd corrected vs tiesmerge TIES: ΔW relative distance {distance:.2g}; scored separately")
    seconds["merges"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    questions = [q for d in config.domains for q in sets[config.eval_split][d][: config.limit]]
    targets = [Target("base", "base")] + [Target(d, "adapter", str(p)) for d, p in specs.items()] + \
        [Target(m, "merged", str(p)) for m, p in merged.items()]
    result, hits = evaluate_targets(config.base, targets, questions, {d: d for d in config.domains},
                                    mode=config.mode, batch_size=config.batch_size, progress=progress, log=log,
                                    root=cache_root, same_as=same_as, dtype=scoring_dtype(config.eval_dtype, "auto"))
    seconds["evaluation"] = time.perf_counter() - t0
    result.meta.update({"split": config.eval_split, "config": config.model_dump(mode="json", by_alias=True),
                        "peft_fixed_vs_ties_delta_distance": distance})

    checks = table.specialist_checks(result)
    paths = {"base": base_path, **{f"specialist {d}": str(p) for d, p in specs.items()},
             **{f"merge {m}": str(p) for m, p in merged.items()}}
    with atomic_output_dir(out, force) as tmp:
        write_outputs(result, tmp)
        (tmp / "results.md").write_text(render_markdown(result, checks) + "\n")
        (tmp / "paths.json").write_text(json.dumps({**paths, "stage_seconds": seconds}, indent=2) + "\n")
    paths["results"] = str(out)
    return DemoRun(result, checks, paths, seconds, hits, config)


def render_markdown(result: EvalResult, checks) -> str:
    h1, r1 = table.matrix_rows(result)
    h2, r2 = table.merge_rows(result)
    return "\n\n".join([
        f"Specialist × domain accuracy, % (95% Wilson interval), {result.meta.get('split', 'test')} split, "
        f"n = {result.cell('base', result.domains[0])['n']} per domain (* = the domain's specialist):",
        table.markdown(h1, r1),
        "\n".join(f"- {line}" for line in table.check_lines(checks)),
        "Merges (accuracy %, normalized accuracy = merged ÷ specialist, gain kept = (merged − base) ÷ "
        "(specialist − base), means over domains):",
        table.markdown(h2, r2),
    ])
