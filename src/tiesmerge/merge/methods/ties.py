"""TIES-merging in ΔW space, written natively (equal to mergekit's `ties` kernel)."""

from __future__ import annotations

import torch

from tiesmerge.merge import steps
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams


def ties(deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
    """Trim each ΔW_i to its density, weight it, elect signs, average the agreeing entries, × λ."""
    weights = torch.tensor(p.weights, dtype=deltas.dtype, device=deltas.device)
    # Step 1: trim, then weight: τ̂_i = w_i · trim(ΔW_i)
    weighted = steps.trim(deltas, p.densities)
    kept = int(torch.count_nonzero(weighted)) / weighted.numel() if weighted.numel() else 0.0
    weighted.mul_(weights.reshape((-1,) + (1,) * (deltas.dim() - 1)))
    # Step 2: elect sign
    sign = steps.elect_sign(weighted, p.sign)
    # Step 3: disjoint merge, then scale by λ
    merged, agreeing, disagreeing = steps.merge_agreeing(weighted, weights, sign,
                                                         normalize=True if p.normalize is None else p.normalize)
    conflict = steps.conflict_rate(agreeing, disagreeing)
    if p.lam != 1:
        merged.mul_(p.lam)
    return MergeOutput(merged, MergeStats(kept_density=kept, sign_conflict_rate=conflict))
