"""The ceilings of `make bench-quality` and the intervals every row carries.

- multi-task: one LoRA trained by the suite's own trainer on every specialist's train data mixed, for the same total
  steps as the specialists together, at rank r and at rank Σr — the reference merging papers report against;
- routing: each domain answered by its own specialist (a router that is never wrong);
- per row and domain, the 95 % interval of the gain kept, (merged − base) / (specialist − base), by a paired bootstrap
  over that domain's test questions (each resample keeps a question's base, specialist and merged answers together);
- per row, the share of the multi-task gain: (mean acc − base) / (multi-task mean acc − base), against the rank-Σr
  multi-task LoRA.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

BOOTSTRAP = 2000
MT_VERSION = 1


def gain_kept_interval(merged: list[int], base: list[int], spec: list[int], seed: int = 0) -> tuple[float, float] | None:
    """Paired-bootstrap 95 % percentile interval of Σ(m − b) / Σ(s − b) over one domain's questions."""
    import numpy as np

    m, b, s = (np.asarray(x, dtype=np.int64) for x in (merged, base, spec))
    n = len(m)
    if n == 0 or (s - b).sum() == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))
    num, den = (m - b)[idx].sum(1), (s - b)[idx].sum(1)
    ok = den != 0
    ratio = num[ok] / den[ok]
    return float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))


def annotate(rows: list[dict], flags: dict, base_flags: list[int], spec_flags: dict[str, list[int]],
             questions, mt_label: str | None) -> None:
    """Adds `retention_ci` (domain → interval), `retention_worst_ci` and `mt_share` to every row in place."""
    by_domain: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_domain.setdefault(q.domain, []).append(i)
    mt = next((r for r in rows if r["label"] == mt_label), None)
    base_mean = sum(base_flags) / len(base_flags)
    for r in rows:
        f = flags[(r["label"], r["rank"])]
        r["retention_ci"] = {d: gain_kept_interval([f[i] for i in ix], [base_flags[i] for i in ix],
                                                   [spec_flags[d][i] for i in ix]) for d, ix in by_domain.items()}
        worst = r.get("retention_worst")
        r["retention_worst_ci"] = r["retention_ci"].get(worst[0]) if worst else None
        if mt is not None and mt["mean_accuracy"] != base_mean:
            r["mt_share"] = (r["mean_accuracy"] - base_mean) / (mt["mean_accuracy"] - base_mean)


def train_multitask(sx, rank: int, base: str, log) -> tuple[Path, float]:
    """The suite's multi-task LoRA at `rank` (cached); its training seconds (NaN when cached)."""
    from tiesmerge.cache import cache_key, cached_dir
    from tiesmerge.eval.models import load_base
    from tiesmerge.train.trainer import train_adapter

    mixed = [q for d in sx.specs for q in sx.train_sets[d]]
    steps = sum(sx.train_settings[d].steps for d in sx.specs)
    first = sx.train_settings[next(iter(sx.specs))]
    settings = replace(first, steps=steps, rank=rank, warmup_steps=max(1, steps // 10))
    key = cache_key("quality-multitask", MT_VERSION, sx.name, base, settings,
                    [(q.question, q.answer) for q in mixed])
    seconds = [float("nan")]

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        model, tok = load_base(base, dtype="float32", device="auto")
        random.Random(0).shuffle(mixed)
        card = train_adapter(model, tok, mixed, settings, tmp, card={"suite": sx.name, "multitask": True})
        seconds[0] = time.perf_counter() - start
        log(f"{sx.name}: multi-task LoRA rank {rank}, {steps} steps on {len(mixed)} questions: loss "
            f"{card['loss_first']:.3f} → {card['loss_last_10_mean']:.3f}, {card['seconds']:.0f} s")

    path, _ = cached_dir("quality-multitask", f"{sx.name}-r{rank}", key, build)
    return path, seconds[0]


def ceiling_rows(sx, ctx) -> list[dict]:
    """The routing row and the multi-task rows at rank r and Σr."""
    domains, r, exact = ctx["domains"], sx.rank, sx.rank * len(ctx["domains"])
    rows = []
    routed = [ctx["spec_flags"][q.domain][i] for i, q in enumerate(ctx["test_qs"])]
    rows.append(ctx["row_from_flags"]("routing (each domain → its specialist)", "routing", "—", exact, {}, routed))
    for rank in (r, exact):
        path, seconds = train_multitask(sx, rank, ctx["base"], ctx["log"])
        steps = sum(sx.train_settings[d].steps for d in domains)
        rows.append(ctx["row"](f"multi-task LoRA r{rank}", "multitask", "—", rank, {"steps": steps}, path,
                               cost={"train_s": seconds, "steps": steps}))
    return rows
