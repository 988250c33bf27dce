"""Iso-CTS, isotropic merging in common and task-specific subspaces (Marczak et al., ICML 2025).

The top `common_fraction` of the summed update's directions form a common subspace; the rest of the budget is split
equally among the tasks, each contributing the top directions of its own update with the common subspace projected
out. The stacked left and right directions are made orthonormal (polar factors) and given one flat singular value,
the mean of those selected: ΔW = λ · σ̄ · polar(U) polar(V)ᵀ.

LoRA-aware (see subspace.py): the budget is the rank of the sum (≤ Σ r_t), not min(d_out, d_in), and a task whose
residual has fewer directions than its share contributes the ones it has; equal to fusion-bench's `iso_cts` when the
sum and every residual have full rank.
"""

from __future__ import annotations

import torch

from tiesmerge.merge.methods.subspace import polar, svd_nonzero, weighted
from tiesmerge.merge.params import ParamDef
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams

COMMON_FRACTION = ParamDef("common_fraction", float, 0.8, "Iso-CTS: share of the directions kept as the common "
                           "subspace (0.8: the paper's and fusion-bench's default)", 0, 1, low_open=True,
                           high_open=True)


def iso_cts(deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
    tasks = weighted(deltas, p.weights)
    n_tasks = len(tasks)
    u, s, vh = svd_nonzero(tasks.sum(0))
    k = s.numel()
    if k == 0:
        return MergeOutput(torch.zeros_like(deltas[0]), MergeStats())
    fraction = p.option(COMMON_FRACTION)
    common = int(k * fraction)
    specific_total = round((k - common) / n_tasks) * n_tasks  # task-specific budget divisible by T
    common = k - specific_total
    share = specific_total // n_tasks
    u_c, s_c, vh_c = u[:, :common], s[:common], vh[:common]
    us, ss, vs = [], [], []
    for task in tasks:
        residual = task - u_c @ (u_c.T @ task)  # the task's update outside the common subspace
        ut, st, vht = svd_nonzero(residual)
        us.append(ut[:, :share])
        ss.append(st[:share])
        vs.append(vht[:share])
    u_all = torch.cat([*us, u_c], 1)
    s_all = torch.cat([*ss, s_c])
    vh_all = torch.cat([*vs, vh_c], 0)
    merged = s_all.mean() * (polar(u_all) @ polar(vh_all.T).T)
    return MergeOutput((p.lam * merged).to(deltas.dtype), MergeStats())
