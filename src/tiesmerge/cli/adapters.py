"""`tiesmerge adapters train`: make a real specialist adapter (for demos and merge tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tiesmerge import api
from tiesmerge.cli.common import guarded
from tiesmerge.cli.progress import module_progress

app = typer.Typer(help="Make adapters: a small specialist trainer (bring your own adapters for real work).",
                  no_args_is_help=True)


@app.command("train")
@guarded
def train(
    ctx: typer.Context,
    base: str = typer.Option(..., "--base", help="base model: a local folder, a hub id, or `smollm2` (embedded)"),
    domain: str = typer.Option(..., "--domain", help="built-in domain (math, code, stem, humanities) or a label for --data"),
    out: Path = typer.Option(..., "-o", "--out", help="output adapter directory"),
    data: Optional[Path] = typer.Option(None, "--data", help="training questions (.jsonl, .csv, .json); default: "
                                        "the built-in train split of --domain"),
    steps: int = typer.Option(60, "--steps", min=1, help="optimizer steps"),
    rank: int = typer.Option(16, "--rank", min=1, help="LoRA rank r"),
    alpha: float = typer.Option(32.0, "--alpha", help="lora_alpha (RSLoRA scale α/√r)"),
    lr: float = typer.Option(2e-4, "--lr", help="peak learning rate (warmup, then cosine decay)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="questions per step"),
    seed: int = typer.Option(0, "--seed", help="seed for initialisation and data order"),
    target: str = typer.Option("letter", "--target", help="letter: options shown, loss on the answer letter "
                               "(for `eval --mode letters`); text: no options, loss on the answer's text "
                               "(for `eval --mode cloze`; what small bases learn fast)"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output directory"),
) -> None:
    """Train one RSLoRA specialist on all seven projections, with the loss on the answer letter only."""
    with module_progress(steps, f"training {domain}", unit="steps") as hook:
        card = api.train_adapter(base=base, domain=domain, out=out, data=data, steps=steps, rank=rank, alpha=alpha,
                                 lr=lr, batch_size=batch_size, seed=seed, target=target, device=device, force=force,
                                 progress=hook)
    Console(soft_wrap=True).print(
        f"wrote {out}: {card['examples']} questions, {steps} steps, loss {card['loss_first']:.3f} → "
        f"{card['loss_last_10_mean']:.3f} (last 10), {card['seconds_per_step']:.2f} s/step", markup=False)
