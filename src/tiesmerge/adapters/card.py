"""The model card (README.md) written beside a merged adapter."""

from __future__ import annotations

from typing import Mapping, Sequence


def model_card(
    *,
    base_model: str | None,
    method: str,
    recipe_yaml: str,
    inputs: Sequence[Mapping[str, object]],
    summary: Mapping[str, object],
    version: str,
) -> str:
    """A Hugging Face style card: YAML front matter, the recipe, the inputs with their sha256."""
    front = ["---", "library_name: peft"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front += ["tags:", "- lora", "- merge", "- tiesmerge", f"- {method}", "---", ""]
    lines = [
        f"# Merged LoRA adapter ({method})",
        "",
        f"Made with tiesmerge {version} by merging {len(inputs)} PEFT adapters in ΔW space and "
        "re-factorising the result; the config has `r = lora_alpha` and `use_rslora: false`, "
        "so the LoRA scaling is exactly 1. Load it with `PeftModel.from_pretrained(base, path)`.",
        "",
        "## Inputs",
        "",
        "| name | weight | path | adapter_model.safetensors sha256 |",
        "| --- | --- | --- | --- |",
    ]
    for item in inputs:
        lines.append(f"| {item['name']} | {item['weight']} | `{item['path']}` | `{item['sha256']}` |")
    lines += [
        "",
        "## Result",
        "",
        f"- modules: {summary.get('modules')}",
        f"- rank: {summary.get('rank_min')}–{summary.get('rank_max')}",
        f"- retained energy: mean {_fmt(summary.get('retained_energy_mean'))}, "
        f"min {_fmt(summary.get('retained_energy_min'))} ({summary.get('worst_module')})",
        f"- sign-conflict rate (mean): {_fmt(summary.get('sign_conflict_rate_mean'))}",
        "",
        "Per-module numbers are in `merge_report.json`.",
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(front + lines)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"
