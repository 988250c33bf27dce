"""Shared by the generators: an unlettered item, number formatting, distractor picking."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence


@dataclass(frozen=True)
class Item:
    """A question before its answer letter is assigned: the answer, ≥3 distractors, and how it was verified."""

    question: str
    answer: str
    distractors: tuple[str, ...]
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def fmt_num(x: float, digits: int = 4) -> str:
    """Integers as integers; others to `digits` significant figures, plain or scientific by size."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{float(f'{x:.{digits}g}'):g}"


def pick_distinct(answer: str, candidates: Iterable[str], rng: random.Random, k: int = 3) -> tuple[str, ...] | None:
    """k distinct candidates different from the answer (in a seeded random order), or None if too few."""
    seen, pool = {answer}, []
    for c in candidates:
        if c not in seen:
            seen.add(c)
            pool.append(c)
    if len(pool) < k:
        return None
    return tuple(rng.sample(pool, k))


def numeric_distractors(value: float, rng: random.Random, fmt: Callable[[float], str] = fmt_num,
                        extra: Sequence[float] = ()) -> tuple[str, ...] | None:
    """Wrong answers of the same type and magnitude: plausible mistakes first, then small offsets."""
    answer = fmt(value)
    base = abs(value) if value else 1.0
    steps = [1, 2, 3, 5, 10] if float(value).is_integer() else [base * f for f in (0.05, 0.1, 0.2, 0.25, 0.5)]
    near = [value + s * sign for s in steps for sign in (1, -1)]
    if value > 0:
        near = [v for v in near if v > 0] or near
    rng.shuffle(near)
    return pick_distinct(answer, [fmt(v) for v in (*extra, *near)], rng)
