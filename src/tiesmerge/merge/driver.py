"""The streaming driver: one module at a time — read its factors, merge, re-factorise, write.

Peak memory is one module's ΔW stack plus its output factors, whatever the number of modules;
the output goes to a temp dir beside the target and replaces it only when everything succeeded.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tiesmerge.adapters.card import model_card
from tiesmerge.adapters.writer import StreamingSafetensorsWriter, lora_config
from tiesmerge.atomic import atomic_output_dir, check_output_dir, ensure_free_space, refuse_overlap
from tiesmerge.errors import BadInputError
from tiesmerge.merge.job import MergeJob, output_bytes
from tiesmerge.merge.module import merge_module
from tiesmerge.merge.report import ModuleReport, summarize
from tiesmerge.version import __version__

ProgressHook = Callable[[int, int, str], None]  # (done, total, module name)


@dataclass(frozen=True)
class MergeResult:
    output: Path
    modules: tuple[ModuleReport, ...]
    summary: dict
    seconds: float
    export: Any = None  # the export `merge --export` / tiesmerge.merge(export=…) made, if any


def run(job: MergeJob, out_dir: Path, *, force: bool = False, device: torch.device = torch.device("cpu"),
        progress: ProgressHook | None = None, command: str | None = None) -> MergeResult:
    """Merge every module and write a PEFT adapter to `out_dir` atomically."""
    start = time.perf_counter()
    out_dir = check_output_dir(Path(out_dir), force)
    check_output_path(job, out_dir)
    ensure_free_space(out_dir.parent, output_bytes(job), f"the merged adapter {out_dir.name}")
    modules = job.plan.modules
    reports: list[ModuleReport] = []
    # the inputs' sha256 (for the report) in a background thread: hashing releases the GIL, and reading every input
    # file once more costs seconds at 72B sizes that would otherwise add to the merge
    with InputDigests(job) as digests, atomic_output_dir(Path(out_dir), force) as tmp:
        with StreamingSafetensorsWriter(tmp / "adapter_model.safetensors", metadata={"format": "pt"}) as writer:
            for done, module in enumerate(modules):
                fac, report = merge_module(job, module, device)
                writer.add(module.a_key, fac.A.to(job.out_dtype))
                writer.add(module.b_key, fac.B.to(job.out_dtype))
                reports.append(report)
                if progress:
                    progress(done + 1, len(modules), module.name)
            for key, holder in job.plan.passthrough:
                writer.add(key, job.readers[holder].tensor(key))
        write_metadata(job, tmp, reports, device, time.perf_counter() - start, command, digests)
    seconds = time.perf_counter() - start
    return MergeResult(Path(out_dir), tuple(reports), summarize(reports), seconds)


class InputDigests:
    """The inputs' sha256 (for the report), computed in a background thread while the merge runs: hashing and
    file reads release the GIL, and reading every input once more costs seconds at 72B sizes. Leaving the block
    early (an error, Ctrl-C) stops the hashing at its next 1 MiB block."""

    def __init__(self, job: MergeJob):
        self._readers = job.readers
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tiesmerge-sha256")
        self._futures: list[Future] = []

    def __enter__(self) -> InputDigests:
        self._futures = [self._pool.submit(r.sha256, self._stop) for r in self._readers]
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def get(self, i: int) -> str:
        try:
            return self._futures[i].result()
        except OSError as exc:
            reader = self._readers[i]
            raise BadInputError(f"adapter {reader.name!r}: cannot read {reader.weights_path} to hash it ({exc})") from None


def check_output_path(job: MergeJob, out_dir: Path) -> None:
    """Refuse an output that is, or lies inside, or contains an input adapter (--force would delete it)."""
    inputs = {f"input adapter {r.name!r}": r.path for r in job.readers}
    inputs |= {f"the statistics of {a.name!r}": a.statistics for a in job.recipe.adapters}
    refuse_overlap(out_dir, inputs, "write the merge to a separate directory")


def write_metadata(job: MergeJob, tmp: Path, reports: list[ModuleReport], device: torch.device,
                    seconds: float, command: str | None, digests: InputDigests | None = None) -> None:
    plan = job.plan
    config = lora_config(
        modules=[m.name for m in plan.modules],
        ranks={r.name: r.rank for r in reports},
        base_model=plan.base_model,
        task_type=plan.task_type,
        fan_in_fan_out=plan.fan_in_fan_out,
        exact_targets=plan.layers_restricted,
    )
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    summary = summarize(reports)
    inputs = [
        {"name": e.name, "path": str(e.path), "weight": e.weight, "sha256": digests.get(i) if digests else r.sha256()}
        for i, (e, r) in enumerate(zip(job.recipe.adapters, job.readers))
    ]
    report = {
        "tiesmerge_version": __version__,
        "command": command,
        "method": job.recipe.method.value,
        "recipe": job.recipe.model_dump(mode="json", by_alias=True, exclude_none=True),
        "inputs": inputs,
        "device": str(device),
        "wall_seconds": round(seconds, 3),
        "summary": summary,
        "modules": {r.name: r.as_dict() for r in reports},
    }
    (tmp / "merge_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (tmp / "README.md").write_text(
        model_card(
            base_model=plan.base_model,
            method=job.recipe.method.value,
            recipe_yaml=job.recipe.to_yaml(),
            inputs=inputs,
            summary=summary,
            version=__version__,
        )
    )
