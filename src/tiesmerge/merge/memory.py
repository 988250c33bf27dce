"""A merge whose result stays in memory: every module merged exactly as `driver.run` merges it, the factors and
the PEFT config returned instead of written (the in-memory API and the PEFT drop-in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from tiesmerge.adapters.writer import lora_config
from tiesmerge.merge.job import MergeJob
from tiesmerge.merge.module import merge_module
from tiesmerge.merge.report import ModuleReport, summarize


@dataclass(frozen=True)
class MergedFactors:
    """The merged adapter: module → (A [r, in], B [out, r]) with scale 1, and the PEFT LoraConfig fields that give
    exactly that scale (r = lora_alpha, no RSLoRA; rank_pattern / alpha_pattern where ranks differ)."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    config: dict[str, Any]
    reports: tuple[ModuleReport, ...]
    summary: dict[str, Any]

    def delta(self, module: str) -> torch.Tensor:
        a, b = self.factors[module]
        return b.float() @ a.float()


def merge_to_memory(job: MergeJob, device: torch.device = torch.device("cpu"),
                    progress: Callable[[int, int, str], None] | None = None) -> MergedFactors:
    factors, reports = {}, []
    modules = job.plan.modules
    for done, module in enumerate(modules):
        fac, report = merge_module(job, module, device)
        factors[module.name] = (fac.A.to(job.out_dtype).cpu(), fac.B.to(job.out_dtype).cpu())
        reports.append(report)
        if progress:
            progress(done + 1, len(modules), module.name)
    config = lora_config(modules=[m.name for m in modules], ranks={r.name: r.rank for r in reports},
                         base_model=job.plan.base_model, task_type=job.plan.task_type,
                         fan_in_fan_out=job.plan.fan_in_fan_out, exact_targets=job.plan.layers_restricted)
    return MergedFactors(factors, config, tuple(reports), summarize(reports))
