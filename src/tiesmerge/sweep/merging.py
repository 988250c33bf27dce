"""Merge every pending grid point in one pass over the modules: each module's factors are read once and its
trim thresholds for every density come from one sort (ModuleCache), so an extra point costs its masking,
merge and re-factorisation only. Each point's adapter is written like `tiesmerge merge` writes one (same
files, report and card), into its own folder, atomically, when the pass ends."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from tiesmerge.adapters.writer import StreamingSafetensorsWriter, atomic_output_dir
from tiesmerge.configs.recipe import AdapterEntry
from tiesmerge.merge.driver import _write_metadata
from tiesmerge.merge.job import prepare
from tiesmerge.merge.module import ModuleCache, merge_module
from tiesmerge.merge.report import summarize
from tiesmerge.sweep.config import SweepConfig
from tiesmerge.sweep.points import Point, recipe_for

Progress = Callable[[int, int, str], None]


def merge_points(cfg: SweepConfig, points: Sequence[Point], adapters: Sequence[AdapterEntry], folder_of: Callable[[Point], Path],
                 device: torch.device, progress: Progress | None = None) -> dict[str, dict]:
    """Write each point's merged adapter to folder_of(point); return key → the merge report's summary."""
    if not points:
        return {}
    jobs = {p.key: prepare(recipe_for(cfg, p, adapters)) for p in points}
    first = jobs[points[0].key]
    modules = first.plan.modules
    reports: dict[str, list] = {p.key: [] for p in points}
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmps = {p.key: stack.enter_context(atomic_output_dir(folder_of(p), force=True)) for p in points}
        writers = {k: StreamingSafetensorsWriter(t / "adapter_model.safetensors", metadata={"format": "pt"})
                   for k, t in tmps.items()}
        try:
            for done, module in enumerate(modules):
                cache = ModuleCache(first, module, device)  # factors read once, thresholds sorted once
                for p in points:
                    job = jobs[p.key]
                    fac, report = merge_module(job, module, device, cache)
                    writers[p.key].add(module.a_key, fac.A.to(job.out_dtype))
                    writers[p.key].add(module.b_key, fac.B.to(job.out_dtype))
                    reports[p.key].append(report)
                del cache
                if progress:
                    progress(done + 1, len(modules), module.name)
            for p in points:
                for key, holder in first.plan.passthrough:
                    writers[p.key].add(key, first.readers[holder].tensor(key))
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        seconds = time.perf_counter() - start
        for p in points:
            writers[p.key].close()
            _write_metadata(jobs[p.key], tmps[p.key], reports[p.key], device, seconds / len(points),
                            f"tiesmerge sweep (point {p.key})")
    return {p.key: summarize(reports[p.key]) for p in points}
