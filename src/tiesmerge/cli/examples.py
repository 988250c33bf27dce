"""`tiesmerge examples`: write a synthetic adapter set and a recipe, to try tiesmerge without adapters."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from tiesmerge import api
from tiesmerge.api.running import example_shapes
from tiesmerge.cli.common import guarded

app = typer.Typer(help="Synthetic example adapter sets (for trying tiesmerge and for benchmarks).", no_args_is_help=True)



@app.command("create")
@guarded
def create(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="directory to write the adapters and recipe.yaml into"),
    shape: str = typer.Option("smollm2-135m", "--shape", help=f"model shapes: {', '.join(example_shapes())}"),
    layers: Optional[int] = typer.Option(None, "--layers", min=1, help="number of layers (default: the model's)"),
    names: List[str] = typer.Option(["math", "code", "stem", "humanities"], "--name", help="adapter names (repeat)"),
    rank: int = typer.Option(16, "--rank", min=1, help="LoRA rank r of each adapter"),
    alpha: float = typer.Option(32.0, "--alpha", help="lora_alpha of each adapter"),
    rslora: bool = typer.Option(True, "--rslora/--no-rslora", help="write use_rslora adapters (scale α/√r)"),
    dtype: str = typer.Option("float32", "--dtype", help="factor dtype: float32, bfloat16 or float16"),
    seed: int = typer.Option(0, "--seed", help="seed of the set"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty directory"),
) -> None:
    """Write N synthetic PEFT adapters at a real model's shapes, and a TIES recipe for them."""
    recipe = api.create_examples(out, shape=shape, layers=layers, names=names, rank=rank, alpha=alpha, rslora=rslora,
                                 dtype=dtype, seed=seed, force=force)
    Console().print(
        f"wrote {len(names)} adapters ({shape}, {layers or example_shapes().get(shape, '?')} layers × 7 projections, r={rank}, "
        f"{'RSLoRA' if rslora else 'LoRA'}) and {recipe}",
        soft_wrap=True,
    )
