"""The calibrated rows of `make bench-quality`: RegMean (full and core space, statistics from each specialist's own
*train* prompts) and refine (distilling each specialist into a data-free merge on those prompts), each with its
cost, and the curves of gain retention vs prompts per adapter and vs refine steps. Gold answers are never read:
the prompts are the train questions' texts only (Prompt objects). Everything is cached under $TIESMERGE_CACHE."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from tiesmerge.cache import adapter_digest, cache_key, cached_dir
from tiesmerge.calibration.prompts import Prompt, PromptFormat, budget, prompts_digest
from tiesmerge.merge.recipe import Recipe
from tiesmerge.train.refine import RefineSettings

FMT = PromptFormat.cloze  # both suites score cloze
REFINE = RefineSettings(steps=150, batch_size=16, lr=1e-3, tokens=6, eval_every=25, patience=3, prompt_format=FMT)
REGMEAN_GRID = [0.0, 0.5, 0.9, 1.0]  # off_diagonal (0: the diagonal alone, the compact form for 72B)


def flatten(tmp: Path) -> None:
    """Move the adapter written to tmp/adapter up into tmp (the cache entry's folder)."""
    for f in (tmp / "adapter").iterdir():
        f.rename(tmp / f.name)
    (tmp / "adapter").rmdir()


@dataclass(frozen=True)
class RefineRow:
    label: str
    start: str  # the data-free candidate's label whose chosen merge is the start
    prompts: int  # per adapter (at most the train split's size)
    steps: int
    curve: bool = False  # a point of the prompts / steps curves (not a headline row)


REFINE_ROWS = (
    RefineRow("refine ← Iso-C", "Iso-C", 256, 150),
    RefineRow("refine ← TIES (core)", "TIES (core)", 256, 150),
    RefineRow("refine ← Iso-C, 16 prompts", "Iso-C", 16, 150, curve=True),
    RefineRow("refine ← Iso-C, 64 prompts", "Iso-C", 64, 150, curve=True),
    RefineRow("refine ← Iso-C, 50 steps", "Iso-C", 256, 50, curve=True),
)


def train_prompts(data, domains, size: int) -> dict[str, list[Prompt]]:
    """Each domain's train questions as unlabeled prompts (text and options only), budgeted."""
    return {d: budget([Prompt(q.question, tuple(q.choices)) for q in data["train"][d]], size) for d in domains}


def statistics(specs: dict[str, Path], prompts, base: str, log) -> tuple[dict[str, Path], float]:
    from tiesmerge.calibration.statistics import cached_base, calibrate, statistics_path
    from tiesmerge.eval.models import load_base

    start = time.perf_counter()
    if all(statistics_path(p, prompts[d], FMT).is_file() and cached_base(statistics_path(p, prompts[d], FMT)) == base
           for d, p in specs.items()):
        files = {d: statistics_path(p, prompts[d], FMT) for d, p in specs.items()}
        return files, float("nan")  # cached: the cost was measured when they were made (see the log)
    model, tok = load_base(base, dtype="float32", device="cpu")
    files = calibrate(model, tok, base, specs, prompts, FMT, log=log)
    seconds = time.perf_counter() - start
    log(f"statistics of {len(specs)} adapters: {seconds:.0f} s")
    return files, seconds


def pp_statistics(specs: dict[str, Path], prompts, base: str, off: float, log) -> tuple[dict[str, Path], float]:
    """RegMean++ statistics (block by block from the partially merged model, a = off, λ 1, weights 1), cached."""
    from tiesmerge.cache import cache_dir
    from tiesmerge.calibration.regmean_pp import collect_pp
    from tiesmerge.eval.models import load_base

    key = cache_key("quality-regmean-pp", 1, base, off, [(d, adapter_digest(p), prompts_digest(prompts[d], FMT))
                                                          for d, p in specs.items()])
    folder = cache_dir() / "statistics-pp" / key
    files = {d: folder / f"{d}.regmean_pp.safetensors" for d in specs}
    if all(f.is_file() for f in files.values()):
        return files, float("nan")
    start = time.perf_counter()
    model, tok = load_base(base, dtype="float32", device="cpu")
    files = collect_pp(model, tok, base, specs, prompts, FMT, {"off_diagonal": off, "lambda": 1.0,
                                                               "weights": {d: 1.0 for d in specs}}, folder, log=log)
    seconds = time.perf_counter() - start
    log(f"RegMean++ statistics of {len(specs)} adapters: {seconds:.0f} s")
    return files, seconds


def regmean_merge(space: str, off: float, rank: int, specs, files, log, method: str = "regmean") -> Path:
    from tiesmerge.merge import driver
    from tiesmerge.merge.job import prepare

    recipe = Recipe.model_validate({
        "method": method, "space": space, "parameters": {"off_diagonal": off}, "output": {"rank": rank},
        "adapters": [{"name": d, "path": str(p), "statistics": str(files[d])} for d, p in specs.items()]})
    key = cache_key(f"quality-{method}", 2, space, off, rank,
                    [(adapter_digest(p), str(files[d])) for d, p in specs.items()])  # 2: the exact solve

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        driver.run(prepare(recipe), tmp / "adapter", force=True)
        flatten(tmp)
        log(f"merged {method} {space} a={off} rank {rank}: {time.perf_counter() - start:.1f} s")

    path, _ = cached_dir("quality-merges", method, key, build)
    return path


def refined(row: RefineRow, start: Path, specs, prompts, base: str, log) -> tuple[Path, dict]:
    import json

    from tiesmerge.train.refine_job import run_refine

    settings = replace(REFINE, steps=row.steps)
    spec = Recipe.model_validate({"method": "iso_c", "space": "core", "output": {"rank": "full"},
                                  "adapters": [{"name": d, "path": str(p)} for d, p in specs.items()]})
    key = cache_key("quality-refine", 1, base, settings.as_dict(), adapter_digest(start),
                    [(d, adapter_digest(p), prompts_digest(prompts[d], FMT)) for d, p in specs.items()])

    def build(tmp: Path) -> None:
        run_refine(spec, prompts, settings, base=base, start=start, output=tmp / "adapter", force=True,
                   device="cpu", dtype="float32", log=log)
        flatten(tmp)

    path, _ = cached_dir("quality-refined", row.label.split(",")[0].replace(" ← ", "-from-").replace(" ", "_"),
                         key, build)
    return path, json.loads((path / "refine_report.json").read_text())


def calibrated_rows(sx, ctx) -> list[dict]:
    """Rows for the suite `sx`; ctx gives the runner's helpers and state (sessions, chosen merges, scoring)."""
    domains, specs, log = ctx["domains"], sx.specs, ctx["log"]
    exact = sx.rank * len(domains)
    rows = []
    all_prompts = train_prompts(sx.data, domains, 256)
    files, stat_seconds = statistics(specs, all_prompts, ctx["base"], log)
    n_prompts = {d: len(v) for d, v in all_prompts.items()}
    chosen_off = {}
    for space in ("full", "core"):
        label = f"RegMean ({space})"
        scored = []
        for off in REGMEAN_GRID:
            path = regmean_merge(space, off, exact, specs, files, log)
            s = ctx["validate"](label + f" a{off}", path)
            scored.append((s["normalized_mean"], s["mean_accuracy"], -len(scored), off))
        off = chosen_off[space] = max(scored)[3]
        path = regmean_merge(space, off, exact, specs, files, log)
        rows.append(ctx["row"](label, "regmean", space, exact, {"off_diagonal": off}, path,
                               cost={"statistics_s": stat_seconds, "prompts": n_prompts, "steps": 0},
                               validation=[[x[0], x[1], x[3]] for x in scored]))
    # RegMean++: statistics depend on a (the blocks merged before), so a is RegMean's choice, not a grid
    pp_files, pp_seconds = pp_statistics(specs, all_prompts, ctx["base"], chosen_off["full"], log)
    path = regmean_merge("full", chosen_off["full"], exact, specs, pp_files, log, method="regmean_pp")
    rows.append(ctx["row"]("RegMean++ (full)", "regmean_pp", "full", exact, {"off_diagonal": chosen_off["full"]},
                           path, cost={"statistics_s": pp_seconds, "prompts": n_prompts, "steps": 0}))
    for row in REFINE_ROWS:
        if row.start not in ctx["chosen"]:
            continue
        start = ctx["chosen"][row.start]
        prompts = train_prompts(sx.data, domains, row.prompts)
        t0 = time.perf_counter()
        path, report = refined(row, start, specs, prompts, ctx["base"], log)
        rows.append(ctx["row"](row.label, "refine", "—", exact, {"steps": report["steps_run"],
                                                                   "best": report["best_step"]}, path,
                               cost={"refine_s": report["seconds"], "prompts": report["prompts"],
                                     "steps": report["steps_run"], "wall_s": round(time.perf_counter() - t0, 1)},
                               curve=row.curve, agreement={d: report["final"][d]["token_agreement"] for d in domains}))
    return rows
