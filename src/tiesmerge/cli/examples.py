"""`tiesmerge examples`: write a synthetic adapter set and a recipe, to try tiesmerge without adapters."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
import yaml
from rich.console import Console

from tiesmerge.adapters.synthetic import SHAPES, write_synthetic_adapter
from tiesmerge.atomic import atomic_output_dir, check_output_dir, ensure_free_space
from tiesmerge.cli.common import guarded
from tiesmerge.dtypes import FLOAT_DTYPES
from tiesmerge.errors import BadInputError

app = typer.Typer(help="Synthetic example adapter sets (for trying tiesmerge and for benchmarks).", no_args_is_help=True)



@app.command("create")
@guarded
def create(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="directory to write the adapters and recipe.yaml into"),
    shape: str = typer.Option("smollm2-135m", "--shape", help=f"model shapes: {', '.join(SHAPES)}"),
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
    if shape not in SHAPES:
        raise BadInputError(f"--shape {shape!r} is unknown; choose one of {', '.join(SHAPES)}")
    if dtype not in FLOAT_DTYPES:
        raise BadInputError(f"--dtype {dtype!r} is unknown; choose float32, bfloat16 or float16")
    if len(set(names)) != len(names):
        raise BadInputError("--name values must be distinct")
    model = SHAPES[shape]
    target = check_output_dir(out, force)
    per_adapter = sum((d_out + d_in) * rank for d_out, d_in in model.modules(layers).values())
    ensure_free_space(target.parent, per_adapter * FLOAT_DTYPES[dtype].itemsize * len(names), f"{len(names)} adapters")
    with atomic_output_dir(out, force) as tmp:
        for i, name in enumerate(names):
            write_synthetic_adapter(
                tmp / name, model, layers=layers, r=rank, alpha=alpha, rslora=rslora,
                adapter_seed=seed * 1000 + i + 1, set_seed=seed, dtype=FLOAT_DTYPES[dtype],
            )
        recipe = {
            "method": "ties",
            "parameters": {"density": 0.2, "lambda": 1.0, "sign": "sum"},
            "adapters": [{"name": n, "path": n, "weight": round(1 / len(names), 6)} for n in names],
            "output": {"rank": rank, "dtype": "auto"},
        }
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    n_layers = layers or model.layers
    Console().print(
        f"wrote {len(names)} adapters ({shape}, {n_layers} layers × 7 projections, r={rank}, "
        f"{'RSLoRA' if rslora else 'LoRA'}) and {out / 'recipe.yaml'}",
        soft_wrap=True,
    )
