"""The demo's tables: the specialist × domain matrix with the specialisation checks, and the merge table
(accuracy per domain, mean, normalized accuracy mean and worst domain, gain retention), as rich tables
for the terminal and as Markdown for the README."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from tiesmerge.eval.report import EvalResult


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


@dataclass(frozen=True)
class SpecialistCheck:
    domain: str
    name: str
    own_gain: float  # specialist − base on its own domain
    gain_ci95: tuple[float, float]  # paired 95% interval of that gain (the same questions scored by both)
    best_other_gain: float  # its largest gain on another domain
    intervals_apart: bool  # the two accuracies' own 95% (Wilson) intervals do not overlap (a stricter test)
    specialised: bool  # own gain > every other gain

    @property
    def beats_base(self) -> bool:
        """The gain is larger than its 95% interval's half-width: the interval lies above zero."""
        return self.gain_ci95[0] > 0

    @property
    def ok(self) -> bool:
        return self.beats_base and self.specialised


def paired_gain_interval(result: EvalResult, target: str, reference: str, domain: str,
                         z: float = 1.959964) -> tuple[float, float]:
    """95% interval of accuracy(target) − accuracy(reference) on the same questions of `domain`.

    Paired (each question scored by both models): only the discordant questions carry information —
    b won by the target alone, c by the reference alone — and the gain (b − c)/n has standard error
    √(b + c − (b − c)²/n)/n (the Wald interval behind McNemar's test). Comparing the two models' own
    intervals instead treats them as independent samples and needs a gap ~1.4× larger."""
    ref = {p.question_id: p.correct for p in result.predictions[reference] if p.domain == domain}
    pairs = [(p.correct, ref[p.question_id]) for p in result.predictions[target]
             if p.domain == domain and p.question_id in ref]
    n = len(pairs)
    if n == 0:
        return (float("nan"), float("nan"))
    b = sum(t and not r for t, r in pairs)
    c = sum(r and not t for t, r in pairs)
    gain = (b - c) / n
    half = z * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return (gain - half, gain + half)


def specialist_checks(result: EvalResult) -> list[SpecialistCheck]:
    out = []
    for domain, name in result.specialist_of.items():
        base = result.cell("base", domain)
        own = result.cell(name, domain)
        gains = {d: result.accuracy(name, d) - result.accuracy("base", d) for d in result.domains}
        others = [g for d, g in gains.items() if d != domain]
        out.append(SpecialistCheck(domain, name, gains[domain], paired_gain_interval(result, name, "base", domain),
                                   max(others) if others else 0.0, own["ci95"][0] > base["ci95"][1],
                                   all(gains[domain] > g for g in others)))
    return out


def matrix_rows(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    """Base and specialists × domains: accuracy % and its 95% interval."""
    header = ["model"] + result.domains + ["mean"]
    rows = []
    for t in result.targets:
        if t.kind == "merged":
            continue
        cells = []
        for d in result.domains:
            c = result.cell(t.name, d)
            star = "*" if result.specialist_of.get(d) == t.name else ""
            cells.append(f"{pct(c['accuracy'])}{star} ({pct(c['ci95'][0])}–{pct(c['ci95'][1])})")
        rows.append([t.name] + cells + [pct(result.mean(t.name))])
    return header, rows


def merge_rows(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    """Every target: accuracy per domain and mean; merges also normalized accuracy and gain retention."""
    header = ["model"] + result.domains + ["mean", "norm. mean", "norm. worst", "gain kept"]
    rows = []
    for t in result.targets:
        row = [t.name] + [pct(result.accuracy(t.name, d)) for d in result.domains] + [pct(result.mean(t.name))]
        if t.kind == "merged":
            s = result.merged_summary(t.name)
            worst = s["normalized_worst"]
            row += [pct(s["normalized_mean"]), f"{pct(worst['value'])} ({worst['domain']})" if worst else "—",
                    pct(s["gain_retention_mean"])]
        else:
            row += ["", "", ""]
        rows.append(row)
    return header, rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def rich_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(header):  # names wrap (two rows never read alike at 80 columns); numbers stay whole
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold", no_wrap=False, ratio=2 if i == 0
                         else None)
    for r in rows:
        table.add_row(*r)
    return table


def check_lines(checks: Sequence[SpecialistCheck]) -> list[str]:
    lines = []
    for c in checks:
        verdict = "ok" if c.ok else "NOT SPECIALISED"
        lo, hi = c.gain_ci95
        lines.append(f"{c.name}: own-domain gain {100 * c.own_gain:+.1f} pts (paired 95% CI {100 * lo:+.1f} to "
                     f"{100 * hi:+.1f}), best other {100 * c.best_other_gain:+.1f} pts; beats base beyond the 95% "
                     f"interval: {'yes' if c.beats_base else 'no'} (the two accuracies' own intervals "
                     f"{'also' if c.intervals_apart else 'still'} {'apart' if c.intervals_apart else 'overlap'}); "
                     f"own gain largest: {'yes' if c.specialised else 'no'} → {verdict}")
    return lines
