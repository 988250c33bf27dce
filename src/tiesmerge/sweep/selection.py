"""Per-point metrics on the validation split, and the choice of the best point (validation rows only)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from tiesmerge.eval.report import EvalResult, Target
from tiesmerge.eval.scoring import Prediction
from tiesmerge.sweep.config import Metric
from tiesmerge.sweep.points import Point

VALIDATION = "validation"


def point_row(point: Point, preds: Sequence[Prediction], references: Mapping[str, Sequence[Prediction]],
              specialist_of: Mapping[str, str], merge_summary: Mapping) -> dict:
    """The row appended to points.jsonl: settings, validation accuracy per domain, normalized accuracy and
    gain retention against the specialists and the base, and the merge's retained energy / sign conflicts."""
    targets = [Target(name, "adapter") for name in references] + [Target(point.key, "merged")]
    preds_all = {**references, point.key: list(preds)}
    domains = sorted({p.domain for p in preds})
    result = EvalResult(targets, domains, preds_all, dict(specialist_of))
    summary = result.merged_summary(point.key)
    worst = summary["normalized_worst"] or {}
    return {
        **point.as_dict(),
        "split": VALIDATION,
        "n_questions": len(preds),
        "accuracy": {d: result.accuracy(point.key, d) for d in domains},
        "accuracy_mean": result.mean(point.key),
        "normalized": summary["normalized"],
        "normalized_mean": summary["normalized_mean"],
        "normalized_worst": worst.get("value"),
        "normalized_worst_domain": worst.get("domain"),
        "gain_retention_mean": summary["gain_retention_mean"],
        "retained_energy_mean": merge_summary.get("retained_energy_mean"),
        "sign_conflict_rate_mean": merge_summary.get("sign_conflict_rate_mean"),
    }


METRICS: Mapping[Metric, Callable[[dict], float | None]] = {
    Metric.normalized_mean: lambda r: r.get("normalized_mean"),
    Metric.normalized_worst: lambda r: r.get("normalized_worst"),
    Metric.accuracy_mean: lambda r: r.get("accuracy_mean"),
}


def select(rows: Sequence[dict], metric: Metric) -> dict:
    """The best validation row by `metric`; ties go to the higher mean accuracy, then the earlier grid point.
    Rows of any other split are never considered."""
    score = METRICS[metric]
    candidates = [(i, r) for i, r in enumerate(rows) if r.get("split") == VALIDATION and score(r) is not None]
    if not candidates:
        raise ValueError("no validation rows to choose from")
    _, best = max(candidates, key=lambda ir: (score(ir[1]), ir[1].get("accuracy_mean") or 0.0, -ir[0]))
    return best


def find(rows: Sequence[dict], **settings) -> dict | None:
    """The row whose settings match (e.g. the preset density 0.2, lambda 1.0)."""
    for r in rows:
        if all(r.get(k) is not None and abs(float(r[k]) - float(v)) < 1e-12 for k, v in settings.items()):
            return r
    return None
