"""Full-space TIES from LoRA factors in bounded memory: ΔW rows are formed chunk by chunk.

Pass 1 forms each ΔW_t once (one at a time) to find its trim threshold by selection (kthvalue on
CPU, top-k on CUDA) and how many entries tied with it are kept. Pass 2 walks row chunks: re-forms
the T chunks from the factors (a cheap GEMM), trims them with those thresholds (ties kept in index
order, as the dense trim does), elects signs and merges. The result equals the dense kernel
(`methods/ties.py`) entry for entry, while the stack of T dense ΔW never exists: peak memory is the
merged ΔW plus one ΔW_t and its magnitudes, plus a small chunk stack.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tiesmerge.merge import steps
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams

CHUNK_ELEMENTS = 1 << 24  # entries of the T-stacked chunk (64 MiB in fp32)


def thresholds(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], densities: Sequence[float]):
    """Per adapter: (threshold or None for keep-all, number of entries equal to it that are kept)."""
    out = []
    for b, a, density in zip(bs, as_, densities):
        numel = b.shape[0] * a.shape[1]
        k = steps.keep_count(density, numel)
        if k >= numel:
            out.append((None, 0))
            continue
        if k == 0:
            out.append((float("inf"), 0))
            continue
        mag = (b @ a).abs_().reshape(-1)
        thr = steps.kth_largest(mag, k)
        above = int((mag > thr).sum())
        out.append((float(thr), k - above))
        del mag
    return out


def ties_from_factors(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], p: MethodParams,
                      chunk_elements: int = CHUNK_ELEMENTS) -> MergeOutput:
    """TIES of ΔW_t = bs[t] @ as_[t] (scales already folded into bs), equal to `ties(stack, p)`."""
    t_count = len(bs)
    m, n = bs[0].shape[0], as_[0].shape[1]
    device = bs[0].device
    weights = torch.tensor(p.weights, dtype=torch.float32, device=device)
    w_shape = (-1, 1, 1)
    limits = thresholds(bs, as_, p.densities)
    quota = [q for _, q in limits]
    merged = torch.empty((m, n), dtype=torch.float32, device=device)
    rows = max(1, chunk_elements // max(1, t_count * n))
    kept = nonzero = disagree = 0
    normalize = True if p.normalize is None else p.normalize
    for r0 in range(0, m, rows):
        r1 = min(m, r0 + rows)
        stack = torch.empty((t_count, r1 - r0, n), dtype=torch.float32, device=device)
        for t in range(t_count):
            torch.matmul(bs[t][r0:r1], as_[t], out=stack[t])
            thr, _ = limits[t]
            if thr is None:
                continue
            mag = stack[t].abs()
            mask = mag > thr
            if quota[t] > 0:  # entries tied with the threshold: the first ones in index order
                ties = (mag == thr).reshape(-1).nonzero().squeeze(1)[: quota[t]]
                mask.view(-1)[ties] = True
                quota[t] -= len(ties)
            stack[t].mul_(mask)
        kept += int((stack != 0).sum())
        stack.mul_(weights.reshape(w_shape))  # τ̂_t = w_t · trim(ΔW_t)
        sign = steps.elect_sign(stack, p.sign)
        nz = stack != 0
        nonzero += int(nz.sum())
        disagree += int((nz & (stack.sign() != sign)).sum())
        merged[r0:r1] = steps.disjoint_merge(stack, weights, sign, normalize=normalize)
        del stack, sign, nz
    if p.lam != 1:
        merged.mul_(p.lam)
    stats = MergeStats(kept_density=kept / (t_count * m * n) if m * n else 0.0,
                       sign_conflict_rate=disagree / nonzero if nonzero else 0.0)
    return MergeOutput(merged, stats)
