"""Full-space TIES from LoRA factors in bounded memory: ΔW rows are formed chunk by chunk.

Pass 1 forms each ΔW_t once (one at a time) to find its trim threshold by selection (kthvalue on
CPU, top-k on CUDA) and how many entries tied with it are kept. Pass 2 walks row chunks: re-forms
each adapter's chunk from its factors (a cheap GEMM), trims it with its threshold (ties kept in index
order, as the dense trim does) and folds it into running sums, then elects signs and merges. The
result equals the dense kernel (`methods/ties.py`) entry for entry, while the stack of T dense ΔW
never exists: peak memory is the merged ΔW plus one ΔW_t and its magnitudes, plus a few chunk buffers.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tiesmerge.merge import steps
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams

CHUNK_ELEMENTS = 1 << 22  # entries per row chunk (16 MiB in fp32; about ten such buffers are live)


def chunk_rows(n: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, n))


def chunked_product(b: torch.Tensor, a: torch.Tensor, rows: int) -> torch.Tensor:
    """b @ a formed row chunk by row chunk, so its entries are bitwise those that pass 2 recomputes
    (a GEMM over a few rows may round differently from the same rows of one big GEMM)."""
    out = torch.empty((b.shape[0], a.shape[1]), dtype=torch.float32, device=b.device)
    for r0 in range(0, b.shape[0], rows):
        torch.matmul(b[r0: r0 + rows], a, out=out[r0: r0 + rows])
    return out


def thresholds(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], densities: Sequence[float], rows: int):
    """Per adapter: (threshold or None for keep-all, number of entries equal to it that are kept)."""
    return [steps.trim_limit(lambda b=b, a=a: chunked_product(b, a, rows).abs_().reshape(-1), b.shape[0] * a.shape[1],
                       density)
            for b, a, density in zip(bs, as_, densities)]


class ThresholdTable:
    """Trim thresholds of one module's adapters for any density — the (threshold, tied-entries-kept) pairs
    `thresholds` finds — with each |ΔW_t| formed once and kept, so a sweep's densities cost one selection
    each and its λ values none (selection beats a full sort ~10× on CPU)."""

    def __init__(self, bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], chunk_elements: int = CHUNK_ELEMENTS):
        rows = chunk_rows(as_[0].shape[1], chunk_elements)
        self.mags = [chunked_product(b, a, rows).abs_().reshape(-1) for b, a in zip(bs, as_)]
        self._memo: dict[tuple[int, float], tuple[float | None, int]] = {}

    def limit(self, t: int, density: float) -> tuple[float | None, int]:
        if (t, density) not in self._memo:
            self._memo[(t, density)] = steps.trim_limit(lambda: self.mags[t], self.mags[t].numel(), density)
        return self._memo[(t, density)]

    def limits(self, densities: Sequence[float]) -> list[tuple[float | None, int]]:
        return [self.limit(t, d) for t, d in enumerate(densities)]


def ties_from_factors(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], p: MethodParams,
                      chunk_elements: int = CHUNK_ELEMENTS, limits=None) -> MergeOutput:
    """TIES of ΔW_t = bs[t] @ as_[t] (scales already folded into bs), equal to `ties(stack, p)`, built from the
    same step functions (steps.py) applied to running sums.

    Per row chunk, adapters are folded in one at a time: each chunk of ΔW_t is trimmed with its limit
    (`steps.limit_mask`, the quota of tied entries carried across chunks), weighted, and added to the election's
    totals (`SignTotals`) and the disjoint merge's signed sums (`SignedSums`); then `steps.elect` and
    `steps.merge_agreeing` finish the chunk — no T-stacked tensor, no extra pass. `limits` (from a
    ThresholdTable) skips pass 1.
    """
    m, n = bs[0].shape[0], as_[0].shape[1]
    device = bs[0].device
    rows = chunk_rows(n, chunk_elements)
    limits = limits if limits is not None else thresholds(bs, as_, p.densities, rows)
    quota = [q for _, q in limits]
    merged = torch.empty((m, n), dtype=torch.float32, device=device)
    kept = nonzero = disagree = 0
    normalize = True if p.normalize is None else p.normalize
    for r0 in range(0, m, rows):
        r1 = min(m, r0 + rows)
        x = torch.empty((r1 - r0, n), device=device)
        totals, sums = steps.SignTotals.zeros(x), steps.SignedSums.zeros(x)
        for t, (b, a) in enumerate(zip(bs, as_)):
            torch.matmul(b[r0:r1], a, out=x)
            # Step 1: trim to the adapter's limit, then weight: τ̂_t = w_t · trim(ΔW_t)
            thr, _ = limits[t]
            if thr is not None:
                mask, used = steps.limit_mask(x.abs(), thr, quota[t])
                quota[t] -= used
                x.mul_(mask)
                del mask
            kept += int(torch.count_nonzero(x))
            x.mul_(p.weights[t])
            steps.fold_(totals, sums, x, p.weights[t])
        # Step 2: elect the sign of every entry
        up = steps.elect_up(totals, p.sign)
        # Step 3: disjoint merge: the agreeing entries' sum over their weight
        merged[r0:r1] = steps.merge_agreeing(sums, up, normalize)
        d, k = steps.conflicts(totals, up)
        disagree, nonzero = disagree + d, nonzero + k
        del totals, sums, up, x
    if p.lam != 1:
        merged.mul_(p.lam)
    stats = MergeStats(kept_density=kept / (len(bs) * m * n) if m * n else 0.0,
                       sign_conflict_rate=disagree / nonzero if nonzero else 0.0)
    return MergeOutput(merged, stats)
