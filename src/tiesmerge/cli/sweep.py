"""`tiesmerge sweep`: flags → tiesmerge.sweep (resumable) → print the landscape and the winner."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tiesmerge import api
from tiesmerge.cli.common import guarded


@guarded
def sweep(
    ctx: typer.Context,
    config: str = typer.Argument(..., help="sweep YAML, or a shipped preset: `demo` (the four demo specialists)"),
    out: Path = typer.Option(..., "-o", "--out", help="sweep directory (points.jsonl, results.csv, sweep.png, "
                             "best/, test/); re-running the same command resumes it"),
    executor: str = typer.Option("local", "--executor", help="local (sequential) or ray (points as Ray tasks; "
                                 "pip install 'tiesmerge[ray]')"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="a running Ray cluster (default: a local Ray)"),
    force: bool = typer.Option(False, "--force", help="start over in a directory that holds another sweep"),
) -> None:
    """Sweep the trim density × λ (and optionally rank and merge space) of a TIES merge, evaluate every point on
    the validation split, pick the best by the config's metric, and report it on the test split.

    Each module's factors are read once and its trim threshold for each density is one selection (kthvalue, not a sort), so an
    extra grid point costs its masking and re-factorisation only; the base is loaded once for all evaluations.
    Finished points are appended to points.jsonl as they complete: a killed sweep resumes where it stopped.

    Example: tiesmerge sweep demo -o sweeps/demo
    """
    from rich.console import Console

    from tiesmerge.cli.progress import module_progress

    err = Console(stderr=True, soft_wrap=True)
    run = api.sweep(config, out=out, executor=executor, ray_address=ray_address, force=force,
                    progress=lambda total, label, unit: module_progress(total, label, unit=unit),
                    log=lambda m: err.print(m, markup=False))
    cfg = run.config
    console = Console(soft_wrap=True)
    metric = cfg.metric.value
    for r in run.rows:
        mark = "*" if r["key"] == run.best["key"] else " "
        console.print(f"{mark} {r['key']:<34} acc {100 * r['accuracy_mean']:.1f}  norm {_pct(r['normalized_mean'])}  "
                      f"worst {_pct(r['normalized_worst'])}  energy {_pct(r['retained_energy_mean'])}", markup=False)
    best = run.best
    line = f"best ({metric}, validation): {best['key']}"
    if run.preset is not None:
        line += f"; preset {run.preset['key']}: {metric} {_pct(run.preset[metric])} vs {_pct(best[metric])}"
    console.print(line, markup=False)
    t = run.test
    for target in t.targets:
        console.print(f"test {target.name}: mean accuracy {100 * t.mean(target.name):.1f}", markup=False)
    console.print(f"wrote {out}/points.jsonl, results.csv, sweep.png, best/, test/ ({run.computed} points computed "
                  f"this run; " + ", ".join(f"{k} {v:.0f} s" for k, v in run.seconds.items()) + ")", markup=False)


def _pct(v) -> str:
    return "  -  " if v is None else f"{100 * v:.1f}"
