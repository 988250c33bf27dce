"""The demo's merges: tiesmerge TIES, task arithmetic and the subspace method (Iso-C), the one of them closest to the
specialists refined on the specialists' own train prompts, and PEFT's `add_weighted_adapter(..., combination_type="ties_svd")` on the very
same adapters (the peer baseline)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiesmerge.cache import adapter_digest, cache_key, cached_dir
from tiesmerge.demo.config import DemoConfig
from tiesmerge.merge.params import DENSITY, LAMBDA, SIGN
from tiesmerge.merge.recipe import Recipe
from tiesmerge.merge.registry import get as get_method
from tiesmerge.merge.types import Method
from tiesmerge.progress import ProgressFactory

MERGE_VERSION = 1


def _recipe(config: DemoConfig, adapters: Mapping[str, Path], method: str) -> Recipe:
    """Weights 1/n; of the demo's settings (density, λ, the paper's sign rule), those the method reads. The subspace
    method: core space, weights 1, its own λ, at the exact rank Σ r (as the knowledge benchmark chose it)."""
    if method == config.subspace_method:
        ranks = sum(config.train_for(d).rank for d in adapters)
        return Recipe.model_validate({
            "method": method, "space": "core", "parameters": {"lambda": config.subspace_lambda},
            "adapters": [{"name": n, "path": str(p), "weight": 1.0} for n, p in adapters.items()],
            "output": {"rank": ranks},
        })
    weight = 1.0 / len(adapters)
    settings = {DENSITY: config.density, LAMBDA: config.lam, SIGN: "sum"}
    reads = get_method(Method(method)).parameters
    params = {p.name: v for p, v in settings.items() if p in reads}
    return Recipe.model_validate({
        "method": method,
        "parameters": params,
        "adapters": [{"name": n, "path": str(p), "weight": weight} for n, p in adapters.items()],
        "output": {"rank": config.rank},
    })


def tiesmerge_merge(config: DemoConfig, adapters: Mapping[str, Path], digests: Mapping[str, str], method: str,
                    progress: ProgressFactory, root: Path | None = None) -> tuple[Path, bool]:
    """One tiesmerge merge of the demo (see _recipe): TIES or task arithmetic at the preset's density and λ
    (weights 1/n) at `rank`, or the subspace method in core space at rank Σ r.
    `digests`: each adapter's content hash (adapter_digest), computed once by the caller."""
    from tiesmerge.merge import driver
    from tiesmerge.merge.job import prepare

    recipe = _recipe(config, adapters, method)
    # keyed by what the merge reads (a task-arithmetic merge does not depend on the density)
    key = cache_key("merge", MERGE_VERSION, method, recipe.parameters, recipe.output,
                    [(a.weight, digests[a.name]) for a in recipe.adapters], *(("core",) if recipe.space.value == "core" else ()))

    def build(tmp: Path) -> None:
        job = prepare(recipe)
        with progress(len(job.plan.modules), f"merging {method}", "modules") as hook:
            driver.run(job, tmp / "adapter", force=True, progress=hook, command="tiesmerge demo")
        for f in (tmp / "adapter").iterdir():
            f.rename(tmp / f.name)
        (tmp / "adapter").rmdir()

    return cached_dir("merges", method, key, build, root)


def peft_ties_svd(config: DemoConfig, adapters: Mapping[str, Path], digests: Mapping[str, str],
                  log: Callable[[str], None], root: Path | None = None) -> tuple[Path, bool]:
    """PEFT's own TIES + SVD merge, saved exactly as PEFT saves it (its config is not corrected).

    Weights are 1.0 each: PEFT weights each ΔW before its disjoint mean, so 1.0 gives the TIES mean that
    tiesmerge's normalized 1/n weights give. PEFT 0.21 copies `use_rslora: true` from RSLoRA inputs into
    a config with lora_alpha = r, so the saved adapter is scaled by √r; the card records it."""
    import peft
    import torch
    from peft import PeftModel

    from tiesmerge.eval.models import load_base

    key = cache_key("merge", MERGE_VERSION, "peft_ties_svd", peft.__version__, config.density, config.rank,
                    [digests[n] for n in adapters])

    def build(tmp: Path) -> None:
        log("PEFT ties_svd merge: one add_weighted_adapter call (PEFT reports no progress; ~1 min here)")
        start = time.perf_counter()
        model, _ = load_base(config.base, dtype="float32", device="cpu")
        names = list(adapters)
        pm = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
        for n in names[1:]:
            pm.load_adapter(str(adapters[n]), adapter_name=n)
        with torch.no_grad():
            pm.add_weighted_adapter(names, [1.0] * len(names), "peft_ties_svd", combination_type="ties_svd",
                                    svd_rank=config.rank, density=config.density, majority_sign_method="total")
            for param in pm.parameters():  # its SVD factors are strided views; safetensors < 0.6 refuses those
                param.data = param.data.contiguous()
        staging = tmp / "staging"
        pm.save_pretrained(str(staging), selected_adapters=["peft_ties_svd"])
        saved = staging / "peft_ties_svd" if (staging / "peft_ties_svd").is_dir() else staging
        for f in saved.iterdir():
            shutil.move(str(f), tmp / f.name)
        shutil.rmtree(staging)
        cfg = json.loads((tmp / "adapter_config.json").read_text())
        seconds = time.perf_counter() - start
        (tmp / "merge_card.json").write_text(json.dumps({
            "tool": f"peft {peft.__version__} add_weighted_adapter(combination_type='ties_svd')",
            "density": config.density, "svd_rank": config.rank, "weights": [1.0] * len(names),
            "majority_sign_method": "total", "saved_r": cfg.get("r"), "saved_lora_alpha": cfg.get("lora_alpha"),
            "saved_use_rslora": cfg.get("use_rslora"), "seconds": round(seconds, 1)}, indent=2) + "\n")
        log(f"PEFT ties_svd merge: {seconds:.0f} s (saved r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')}, "
            f"use_rslora={cfg.get('use_rslora')})")

    return cached_dir("merges", "peft_ties_svd", key, build, root)


def peft_scaling_fixed(peft_dir: Path, root: Path | None = None) -> tuple[Path, bool]:
    """PEFT's ties_svd factors with the config corrected to scaling 1 (use_rslora false, α = r): what PEFT's
    merge gives once its merged-RSLoRA bug is worked around, to compare methods rather than the bug."""
    key = cache_key("merge", MERGE_VERSION, "peft_ties_svd_fixed", adapter_digest(peft_dir))

    def build(tmp: Path) -> None:
        shutil.copy2(peft_dir / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        cfg = json.loads((peft_dir / "adapter_config.json").read_text())
        cfg.update({"use_rslora": False, "lora_alpha": cfg["r"], "alpha_pattern": {}})
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "merge_card.json").write_text(json.dumps({"from": str(peft_dir), "change": "use_rslora false, "
                                                         "lora_alpha = r (scaling 1)"}, indent=2) + "\n")

    return cached_dir("merges", "peft_ties_svd_fixed", key, build, root)


def refined_merge(config: DemoConfig, adapters: Mapping[str, Path], digests: Mapping[str, str],
                  starts: Sequence[Path], train_sets: Mapping[str, list], log: Callable[[str], None],
                  root: Path | None = None, validation_sets: Mapping[str, list] | None = None):
    """The data-free merge closest to the specialists on held-out train prompts (`starts`: the candidates), refined
    on each specialist's own train prompts (texts only: answers are never read); the state kept is chosen on the
    built-in validation questions (labelled, held back from training and the test)."""
    import dataclasses
    from dataclasses import replace

    from tiesmerge.calibration.prompts import Prompt, budget, prompts_digest
    from tiesmerge.train.refine import REFINE_VERSION, RefineSettings
    from tiesmerge.train.refine_job import run_refine

    settings = replace(RefineSettings(), steps=config.refine_steps)
    prompts = {d: budget([Prompt(q.question, tuple(q.choices)) for q in train_sets[d]], config.refine_prompts)
               for d in adapters}
    spec = Recipe.model_validate({"method": config.subspace_method, "space": "core",
                                  "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()]})
    validation = [dataclasses.replace(q, domain=d) for d, qs in (validation_sets or {}).items() for q in qs]
    key = cache_key("refine", MERGE_VERSION, REFINE_VERSION, config.base, settings.as_dict(),
                    [adapter_digest(s) for s in starts],
                    [(n, digests[n], prompts_digest(prompts[n], settings.prompt_format)) for n in adapters],
                    [(q.id, q.domain) for q in validation])

    def build(tmp: Path) -> None:
        log(f"refining the closest of {len(starts)} data-free merges on {config.refine_prompts} train prompts per "
            f"specialist ({config.refine_steps} steps, ~5 min on 2 CPU cores)")
        run_refine(spec, prompts, settings, base=config.base, start=list(starts), output=tmp / "adapter", force=True,
                   device="cpu", dtype="float32", log=log, validation=validation)
        for f in (tmp / "adapter").iterdir():
            f.rename(tmp / f.name)
        (tmp / "adapter").rmdir()

    return cached_dir("merges", "refine", key, build, root)


# Relative Frobenius distance (worst module) below which two adapters' ΔW are "the same merge". Two float32
# SVD implementations truncating the same matrix at rank r agree to ~1e-6, except in a module whose r-th and
# (r+1)-th singular values nearly tie: seen on the demo, 3e-4 in 1 module of 210 (1e-6 median).
SAME_DELTA_RTOL = 1e-3


def delta_distance(a: Path, b: Path) -> float:
    """max over modules of ‖ΔW_a − ΔW_b‖_F / ‖ΔW_b‖_F (inf if the two adapters adapt different modules).

    The demo scores an adapter whose ΔW equals an already-scored one's (PEFT's corrected ties_svd vs
    tiesmerge TIES: the same maths, different SVD calls) once, and says so."""
    import torch

    from tiesmerge.adapters.reader import AdapterReader

    ra, rb = AdapterReader(Path(a), "a"), AdapterReader(Path(b), "b")
    if set(ra.modules) != set(rb.modules):
        return float("inf")
    worst = 0.0
    for name in ra.modules:
        da, db = ra.delta(name), rb.delta(name)
        if da.shape != db.shape:
            return float("inf")
        worst = max(worst, float(torch.linalg.norm(da - db) / torch.linalg.norm(db).clamp_min(1e-30)))
    return worst
