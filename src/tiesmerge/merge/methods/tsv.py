"""TSV-M, Task Singular Vectors: Merge (Gargiulo et al., CVPR 2025, arXiv 2412.00081).

Each task keeps its top singular components (an equal share of the span), the stacked left and right singular
vectors are decorrelated across tasks by replacing each stack with its polar factor, and the kept singular values
recombine them: ΔW = λ · polar(U_stack) · diag(σ_stack) · polar(V_stack)ᵀ.

LoRA-aware (see subspace.py): a task keeps min(its rank, ⌊n / T⌋) components, with n the rank of the stacked
updates (not min(d_out, d_in)); equal to fusion-bench's `compute_and_sum_svd_mem_reduction` when every task's
update has at least ⌊n / T⌋ non-zero singular values.
"""

from __future__ import annotations

import torch

from tiesmerge.merge.methods.subspace import concat_rank, polar, svd_nonzero, weighted
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams


def tsv(deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
    tasks = weighted(deltas, p.weights)
    share = max(1, concat_rank(tasks) // len(tasks))
    us, ss, vs = [], [], []
    for task in tasks:
        u, s, vh = svd_nonzero(task)
        us.append(u[:, :share])
        ss.append(s[:share])
        vs.append(vh[:share])
    u, s, vh = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 0)
    if s.numel() == 0:
        return MergeOutput(torch.zeros_like(deltas[0]), MergeStats())
    merged = polar(u) @ torch.diag(s) @ polar(vh.T).T
    return MergeOutput((p.lam * merged).to(deltas.dtype), MergeStats())
