"""Which merge refine starts from when it is given several (the data-free merges: TIES, task arithmetic, Iso-C, …):
each candidate is scored on every adapter's held-out prompts against the cached teacher targets — before any
training, one held-out pass per candidate — and the one closest to its teachers (the lowest mean held-out
objective, the training loss itself) is refined. Labels are never read."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

CANDIDATE = "tiesmerge_candidate"  # the adapter name a candidate is scored under


def choose_start(peft_model, model, candidates: Sequence[Path], score: Callable[[str], Mapping[str, Mapping]],
                 log: Callable[[str], None]) -> tuple[Path, list[dict]]:
    """(the candidate with the lowest mean held-out objective — the first on a tie —, one row per candidate).
    `score(adapter)`: per adapter of the merge, the held-out scores (objective, token_agreement) of `adapter`."""
    from tiesmerge.eval.models import load_adapter

    rows = []
    for path in candidates:
        load_adapter(peft_model, model, Path(path), CANDIDATE)
        peft_model.eval()
        try:
            scores = score(CANDIDATE)
        finally:  # another adapter active first: deleting the active one makes PEFT warn
            peft_model.set_adapter(next(n for n in peft_model.peft_config if n != CANDIDATE))
            peft_model.delete_adapter(CANDIDATE)
        n = max(len(scores), 1)
        row = {"start": str(path), "objective": sum(s["objective"] for s in scores.values()) / n,
               "token_agreement": sum(s["token_agreement"] for s in scores.values()) / n,
               "by_adapter": {a: s["objective"] for a, s in scores.items()}}
        rows.append(row)
        log(f"start candidate {path}: held-out divergence {row['objective']:.4f}, "
            f"token agreement {row['token_agreement']:.1%}")
    best = min(range(len(rows)), key=lambda i: rows[i]["objective"])
    for i, row in enumerate(rows):
        row["chosen"] = i == best
    log(f"start: {candidates[best]} (closest to its teachers on the held-out prompts)")
    return Path(candidates[best]), rows
