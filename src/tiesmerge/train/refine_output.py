"""What a refine leaves: the student as a plain PEFT LoRA (scale 1, the start's ranks and targets) beside its
report, and the report's one-line-per-adapter summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.portable import limits
from tiesmerge.train.refine import RefineRun, student_state


def write_adapter(run: RefineRun, start: Path, out_tmp: Path, report: dict) -> None:
    """The student as a plain PEFT LoRA (scale 1, the start's ranks and targets) and its report."""
    from safetensors.torch import save_file

    config = as_bad_input(limits.read_json)(Path(start) / "adapter_config.json", "--start config")
    ranks = dict(config.get("rank_pattern") or {})
    config.update(lora_alpha=config["r"], use_rslora=False, alpha_pattern={k: v for k, v in ranks.items()},
                  inference_mode=True)
    tensors = student_state(run.peft_model)
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise BadInputError(f"the refined factors are not finite ({bad[0]}); lower --lr")
    save_file(tensors, str(out_tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out_tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_tmp / "refine_report.json").write_text(json.dumps(report, indent=2) + "\n")


def describe(report: Mapping) -> list[str]:
    """One line per adapter: held-out agreement with its teacher, start → refined."""
    lines = []
    for name, end in report["final"].items():
        s = report["start"][name]
        lines.append(f"{name}: token agreement {s['token_agreement']:.1%} → {end['token_agreement']:.1%}, "
                     f"whole continuation {s['sequence_agreement']:.1%} → {end['sequence_agreement']:.1%} "
                     f"({end['prompts']} held-out prompts"
                     + (f"; {report['kept'][name]} prompts kept as the start does them" if report.get("kept") else "")
                     + ")")
    if report.get("validation"):
        v = report["validation"]
        lines.append("validation accuracy: " + ", ".join(f"{d} {v['start'][d]:.1%} → {v['best'][d]:.1%}"
                                                         for d in v["start"]))
    if report.get("returned_start"):
        lines.append("no gain over the start: the start is returned unchanged")
    for row in report.get("start_choice") or []:
        lines.append(f"start candidate {row['start']}: held-out divergence {row['objective']:.4f}"
                     + (" (chosen)" if row.get("chosen") else ""))
    return lines

