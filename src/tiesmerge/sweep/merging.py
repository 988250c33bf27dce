"""Merge every pending grid point in one pass over the modules: each module's factors are read and its
|ΔW_t| formed once, each density's trim threshold is one selection (ModuleCache), and points that differ
only in λ share one merge and one SVD — for native TIES, λ scales the merged ΔW, so its factors are the
λ=1 factors times √λ (λ < 0: B times λ). Each point's adapter is written like `tiesmerge merge` writes one
(same files, report and card), into its own folder, atomically, when the pass ends."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from tiesmerge.adapters.writer import StreamingSafetensorsWriter
from tiesmerge.atomic import atomic_output_dir
from tiesmerge.merge.driver import write_metadata
from tiesmerge.merge.job import prepare
from tiesmerge.merge.module import ModuleCache, merge_module
from tiesmerge.merge.recipe import AdapterEntry
from tiesmerge.merge.registry import get as get_method
from tiesmerge.merge.report import ModuleReport, summarize
from tiesmerge.merge.truncated_svd import Factorization
from tiesmerge.merge.types import Space
from tiesmerge.sweep.config import SweepConfig
from tiesmerge.sweep.points import Point, recipe_for

Progress = Callable[[int, int, str], None]


def lam_group(p: Point) -> str | None:
    """Points sharing this key differ only in λ and are merged once (methods whose merge commutes with λ, in full
    space, where the shared merge also shares the module cache); None: merged on their own."""
    if get_method(p.method).lambda_commutes and p.space is Space.full:
        return replace(p, lam=1.0).key
    return None


def scale_by_lambda(fac: Factorization, report: ModuleReport, lam: float) -> tuple[Factorization, ModuleReport]:
    """The factors and report of λ·ΔW from those of ΔW (energy shares and ranks do not change)."""
    if lam >= 0:
        root = math.sqrt(lam)
        b, a = fac.B * root, fac.A * root
    else:
        b, a = fac.B * lam, fac.A
    return (dataclasses.replace(fac, B=b, A=a, delta_norm=fac.delta_norm * abs(lam)),
            dataclasses.replace(report, delta_norm=report.delta_norm * abs(lam)))


def merge_points(cfg: SweepConfig, points: Sequence[Point], adapters: Sequence[AdapterEntry], folder_of: Callable[[Point], Path],
                 device: torch.device, progress: Progress | None = None) -> dict[str, dict]:
    """Write each point's merged adapter to folder_of(point); return key → the merge report's summary."""
    if not points:
        return {}
    jobs = {p.key: prepare(recipe_for(cfg, p, adapters)) for p in points}
    unit_jobs = {lam_group(p): prepare(recipe_for(cfg, replace(p, lam=1.0), adapters))
                 for p in points if lam_group(p) is not None}
    first = jobs[points[0].key]
    modules = first.plan.modules
    reports: dict[str, list] = {p.key: [] for p in points}
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmps = {p.key: stack.enter_context(atomic_output_dir(folder_of(p), force=True)) for p in points}
        # writers exit before the output folders (LIFO): each file is written whole, or removed on any failure
        writers = {k: stack.enter_context(StreamingSafetensorsWriter(t / "adapter_model.safetensors",
                                                                     metadata={"format": "pt"}))
                   for k, t in tmps.items()}
        for done, module in enumerate(modules):
            cache = ModuleCache(first, module, device)  # factors read once, one selection per density
            shared: dict[str, tuple] = {}
            for p in points:
                job = jobs[p.key]
                group = lam_group(p)
                if group is None:
                    fac, report = merge_module(job, module, device, cache)
                else:
                    if group not in shared:
                        shared[group] = merge_module(unit_jobs[group], module, device, cache)
                    fac, report = scale_by_lambda(*shared[group], p.lam)
                writers[p.key].add(module.a_key, fac.A.to(job.out_dtype))
                writers[p.key].add(module.b_key, fac.B.to(job.out_dtype))
                reports[p.key].append(report)
            del cache, shared
            if progress:
                progress(done + 1, len(modules), module.name)
        for p in points:
            for key, holder in first.plan.passthrough:
                writers[p.key].add(key, first.readers[holder].tensor(key))
        seconds = time.perf_counter() - start
        for p in points:
            write_metadata(jobs[p.key], tmps[p.key], reports[p.key], device, seconds / len(points),
                            f"tiesmerge sweep (point {p.key})")
    return {p.key: summarize(reports[p.key]) for p in points}
