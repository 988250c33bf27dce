"""`tiesmerge demo`: read the demo config → validate → run the cached pipeline → print the tables."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tiesmerge import api
from tiesmerge.cli.common import guarded
from tiesmerge.cli.progress import module_progress


@guarded
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("tiesmerge-demo"), "-o", "--out", help="where results.{json,csv,md}, "
                             "predictions.jsonl and paths.json go"),
    config: Optional[Path] = typer.Option(None, "--config", help="demo settings YAML (default: the shipped "
                                          "tiesmerge/demo/demo.yaml; copy it to change steps, rank, density …)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="evaluate at most N test questions per domain "
                                        "(a quick look; the published table uses all 200)"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty --out directory"),
) -> None:
    """Train four RSLoRA specialists on the embedded SmolLM2-135M, merge them (TIES, task arithmetic, Iso-C, the one
    of those closest to the specialists refined on their own prompts, PEFT ties_svd) and evaluate everything on the
    built-in test split.

    Specialists, merges and evaluations are cached in the user cache ($TIESMERGE_CACHE) under keys of
    their settings: the first run trains, refines and evaluates (27 minutes on 2 CPU cores, 2026-12-07, scoring
    in bf16 where the CPU has AVX-512 BF16), a second run
    reads everything back (seconds), and a changed setting rebuilds only what depends on it.

    Example: tiesmerge demo --out demo-results --limit 50   (a quicker, rougher look)
    """
    from tiesmerge.api.running import demo_tables

    table = demo_tables()
    err = Console(stderr=True, soft_wrap=True)
    start = time.perf_counter()
    run = api.demo(out=out, config=config, limit=limit, force=force,
                   progress=lambda total, label, unit: module_progress(total, label, unit=unit),
                   log=lambda msg: err.print(msg, markup=False))
    cfg = run.config
    console = Console(soft_wrap=True)
    result = run.result
    n = result.cell("base", result.domains[0])["n"]
    console.print(table.rich_table(f"specialist × domain accuracy % (95% CI), {cfg.eval_split} split, n={n}/domain, "
                                   f"* = specialist", *table.matrix_rows(result)))
    for line in table.check_lines(run.checks):
        console.print(line, markup=False)
    console.print(table.rich_table("merges: accuracy %, normalized accuracy (merged ÷ specialist), gain kept",
                                   *table.merge_rows(result)))
    for name, path in run.paths.items():
        console.print(f"{name}: {path}", markup=False)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in run.stage_seconds.items())
    reused = sum(run.cached.values())
    console.print(f"wall time {time.perf_counter() - start:.0f} s ({stages}); evaluations reused from cache: "
                  f"{reused}/{len(run.cached)}", markup=False)
