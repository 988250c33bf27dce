"""The model card (README.md) written beside a merged adapter."""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import yaml


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
    meta: dict[str, object] = {"library_name": "peft"}
    if base_model:
        meta["base_model"] = base_model
    meta["tags"] = ["lora", "merge", "tiesmerge", method]
    # a YAML emitter, not f-strings: a base name with a colon, quote or line break stays one value
    front = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=10**6).rstrip(), "---", ""]
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", recipe_yaml)), default=0))
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
        lines.append(f"| {_cell(item['name'])} | {item['weight']} | `{_cell(item['path'])}` | `{item['sha256']}` |")
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
        fence + "yaml",
        recipe_yaml.rstrip(),
        fence,
        "",
    ]
    return "\n".join(front + lines)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"


def _cell(value: object) -> str:
    """A markdown table cell on one line (| and line breaks escaped)."""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")
