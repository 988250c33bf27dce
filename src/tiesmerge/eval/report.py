"""Evaluation report: accuracy with 95% Wilson intervals per (target, domain), normalized accuracy and
gain retention of merged adapters against each domain's specialist, latency, and the files written."""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from tiesmerge.eval.questions import LETTERS
from tiesmerge.eval.scoring import Prediction, wilson_interval


@dataclass(frozen=True)
class Target:
    name: str  # "base" for the bare base model
    kind: str  # base | adapter | merged
    path: str | None = None


@dataclass
class EvalResult:
    targets: list[Target]
    domains: list[str]
    predictions: dict[str, list[Prediction]]  # target name → predictions
    specialist_of: dict[str, str]  # domain → adapter name
    meta: dict = field(default_factory=dict)

    def cell(self, target: str, domain: str) -> dict:
        preds = [p for p in self.predictions[target] if p.domain == domain]
        n, correct = len(preds), sum(p.correct for p in preds)
        lo, hi = wilson_interval(correct, n)
        return {"target": target, "domain": domain, "n": n, "correct": correct,
                "accuracy": correct / n if n else None, "ci95": [lo, hi]}

    def accuracy(self, target: str, domain: str) -> float | None:
        return self.cell(target, domain)["accuracy"]

    def mean(self, target: str) -> float | None:
        accs = [a for a in (self.accuracy(target, d) for d in self.domains) if a is not None]
        return statistics.fmean(accs) if accs else None

    def merged_summary(self, target: str) -> dict:
        """Normalized accuracy (merged ÷ specialist) and gain retention ((merged − base) ÷ (specialist − base))."""
        norm, retention = {}, {}
        for domain, spec in self.specialist_of.items():
            m, s = self.accuracy(target, domain), self.accuracy(spec, domain)
            if m is None or s is None:
                continue
            norm[domain] = m / s if s > 0 else None
            if "base" in self.predictions:
                b = self.accuracy("base", domain)
                retention[domain] = (m - b) / (s - b) if s != b else None
        present = {d: v for d, v in norm.items() if v is not None}
        worst = min(present, key=present.get) if present else None
        kept = [v for v in retention.values() if v is not None]
        return {
            "normalized": norm,
            "normalized_mean": statistics.fmean(present.values()) if present else None,
            "normalized_worst": {"domain": worst, "value": present[worst]} if worst else None,
            "gain_retention": retention,
            "gain_retention_mean": statistics.fmean(kept) if kept else None,
        }

    def latency(self, target: str) -> dict:
        lat = sorted(p.latency_s for p in self.predictions[target])
        if not lat:
            return {}
        q = statistics.quantiles(lat, n=20, method="inclusive") if len(lat) > 1 else [lat[0]] * 19
        total = sum(lat)
        return {"p50_s": statistics.median(lat), "p95_s": q[18], "max_s": lat[-1],
                "questions_per_s": len(lat) / total if total > 0 else None}

    def as_dict(self) -> dict:
        return {
            **self.meta,
            "targets": [t.__dict__ for t in self.targets],
            "domains": self.domains,
            "specialist_of": self.specialist_of,
            "cells": [self.cell(t.name, d) for t in self.targets for d in self.domains],
            "mean_accuracy": {t.name: self.mean(t.name) for t in self.targets},
            "merged": {t.name: self.merged_summary(t.name) for t in self.targets if t.kind == "merged"},
            "latency": {t.name: self.latency(t.name) for t in self.targets},
        }


def write_outputs(result: EvalResult, out_dir: Path) -> None:
    """results.json, results.csv and predictions.jsonl into an existing directory."""
    data = result.as_dict()
    (out_dir / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    kinds = {t.name: t.kind for t in result.targets}
    with open(out_dir / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["target", "kind", "domain", "n", "correct", "accuracy", "ci95_low", "ci95_high"])
        for c in data["cells"]:
            w.writerow([c["target"], kinds[c["target"]], c["domain"], c["n"], c["correct"],
                        "" if c["accuracy"] is None else f"{c['accuracy']:.6f}", f"{c['ci95'][0]:.6f}", f"{c['ci95'][1]:.6f}"])
    with open(out_dir / "predictions.jsonl", "w") as fh:
        for target, preds in result.predictions.items():
            for p in preds:
                row = {"question_id": p.question_id, "domain": p.domain, "adapter": target, "predicted": p.predicted,
                       "gold": p.gold, "logprobs": dict(zip(LETTERS, p.logprobs)) if p.logprobs else None}
                fh.write(json.dumps(row) + "\n")


def specialists(adapters: Sequence[str], domains: Sequence[str], explicit: Mapping[str, str]) -> dict[str, str]:
    """domain → specialist adapter: explicit NAME=DOMAIN pairs first, then adapters named like a domain."""
    out = {domain: name for name, domain in explicit.items()}
    for name in adapters:
        if name in domains and name not in out.values():
            out.setdefault(name, name)
    return out
