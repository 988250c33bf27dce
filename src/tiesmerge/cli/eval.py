"""`tiesmerge eval`: flags → tiesmerge.evaluate (per-domain accuracy of the base, specialists and merged adapters,
on one loaded base) → the tables."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tiesmerge import api
from tiesmerge.cli.common import data_args, guarded, name_value_pairs
from tiesmerge.cli.progress import module_progress


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def print_table(result, console: Console) -> None:
    """Two narrow tables (they fit 80 columns): accuracy per (model, domain), then one summary row per model."""
    acc = Table(title="accuracy per domain (95% Wilson interval)", title_justify="left")
    for col, justify in (("model", "left"), ("domain", "left"), ("accuracy %", "right"), ("95% CI", "right"),
                         ("n", "right")):
        acc.add_column(col, justify=justify)
    for t in result.targets:
        for i, d in enumerate(result.domains):
            c = result.cell(t.name, d)
            star = " *" if result.specialist_of.get(d) == t.name else ""
            acc.add_row(t.name if i == 0 else "", d + star, _pct(c["accuracy"]),
                        f"{_pct(c['ci95'][0])}–{_pct(c['ci95'][1])}", str(c["n"]),
                        end_section=i == len(result.domains) - 1)
    console.print(acc)
    summary = Table(title="summary (* = the domain's specialist)", title_justify="left")
    for col in ("model", "mean acc %", "norm. acc mean / worst %", "gain kept %", "q/s", "p50 / p95 s"):
        summary.add_column(col, justify="left" if col == "model" else "right")
    for t in result.targets:
        norm = retention = ""
        if t.kind == "merged":
            s = result.merged_summary(t.name)
            worst = s["normalized_worst"]
            norm = f"{_pct(s['normalized_mean'])} / {_pct(worst['value']) if worst else '—'}"
            if worst:
                norm += f" ({worst['domain']})"
            retention = _pct(s["gain_retention_mean"])
        lat = result.latency(t.name)
        summary.add_row(t.name, _pct(result.mean(t.name)), norm, retention, f"{lat.get('questions_per_s') or 0:.2f}",
                        f"{lat.get('p50_s', 0):.2f} / {lat.get('p95_s', 0):.2f}")
    console.print(summary)


@guarded
def eval_cmd(
    ctx: typer.Context,
    base: str = typer.Option(..., "--base", help="base model: a local folder, a hub id, or `smollm2` (embedded)"),
    adapter: List[str] = typer.Option([], "--adapter", help="NAME=PATH of a specialist or any adapter (repeat)"),
    merged: List[str] = typer.Option([], "--merged", help="NAME=PATH of a merged adapter (repeat)"),
    data: List[str] = typer.Option([], "--data", help="DOMAIN=FILE or FILE (.jsonl, .csv, .json; repeat)"),
    builtin: bool = typer.Option(False, "--builtin", help="use the built-in verified question sets"),
    split: str = typer.Option("test", "--split", help="built-in split: train, validation or test"),
    n_per_domain: int = typer.Option(1000, "--n-per-domain", help="built-in set size per domain (all splits)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most N questions per domain"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="questions per forward pass"),
    mode: str = typer.Option("letters", "--mode", help="letters (log-likelihood of A-D after the options), cloze (likelihood of each "
                                "choice's text as the answer; options not shown) or generate (parse a letter)"),
    cloze_norm: str = typer.Option("token", "--cloze-norm", help="cloze: how choices compare — token (mean log-prob "
                                   "per token, default), or lm-evaluation-harness's sum (acc), chars (acc_norm), "
                                   "bytes (acc_bytes)"),
    specialist: List[str] = typer.Option([], "--specialist", help="NAME=DOMAIN: adapter NAME is DOMAIN's specialist"),
    no_base: bool = typer.Option(False, "--no-base", help="do not evaluate the bare base"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="load the base in 4-bit NF4 (bitsandbytes)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="skip invalid question rows (counted) instead of failing"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write results.json, results.csv, predictions.jsonl here"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty --out directory"),
) -> None:
    """Evaluate the base, each adapter and each merged adapter per domain, loading the base once.

    Example: tiesmerge eval --base smollm2 --adapter math=./math --merged ties=./merged --builtin --limit 200
    """

    err = Console(stderr=True, soft_wrap=True)
    with contextlib.ExitStack() as stack:

        def on_target(name: str, total: int):
            hook = stack.enter_context(module_progress(total, f"scoring {name}", unit="questions"))
            done = [0]

            def advance(n: int) -> None:
                done[0] += n
                hook(done[0], total, "")

            return advance

        result = api.evaluate(base, adapters=name_value_pairs(adapter, "--adapter"),
                              merged=name_value_pairs(merged, "--merged"), data=data_args(data), builtin=builtin,
                              split=split, n_per_domain=n_per_domain, limit=limit, batch_size=batch_size, mode=mode,
                              cloze_norm=cloze_norm, specialists=name_value_pairs(specialist, "--specialist"),
                              include_base=not no_base, dtype=dtype, device=device, load_in_4bit=load_in_4bit,
                              skip_invalid=skip_invalid, out=out, force=force, on_target=on_target,
                              log=lambda m: err.print(m if m.startswith("skipped") else f"note: {m}", markup=False))
    print_table(result, Console(soft_wrap=True))
    if out is not None:
        Console(soft_wrap=True).print(f"wrote {out}/results.json, results.csv, predictions.jsonl", markup=False)
