"""The three TIES steps as pure functions on a stack of deltas (adapters along dim 0).

Yadav et al., "TIES-Merging", NeurIPS 2023 (arXiv 2306.01708): trim, elect sign, disjoint merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tiesmerge.merge.types import SignRule


def keep_count(density: float, numel: int) -> int:
    """How many entries a trim at `density` keeps (mergekit's rule: at least one if density > 0)."""
    if density >= 1:
        return numel
    if density <= 0 or numel == 0:
        return 0
    return max(1, int(density * numel))


def _select(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest by one selection: kthvalue on CPU; on CUDA, where kthvalue is ~100x slower
    than a partial top-k (1.8 s vs 15 ms on 242M entries, H100), topk."""
    if values.is_cuda:
        return torch.topk(values, k, sorted=False).values.min()
    return torch.kthvalue(values, values.numel() - k + 1).values


SAMPLE = 1 << 16


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The exact k-th largest entry of a 1-D tensor.

    Large tensors: a fixed-seed sample brackets the answer, two comparison passes count what lies
    above and inside the bracket, and the selection runs on the (small) bracket only — exact, and
    ~6x faster than kthvalue on 242M entries. Falls back to the full selection if the bracket misses.
    """
    n = values.numel()
    if n <= 8 * SAMPLE:
        return _select(values, k)
    gen = torch.Generator().manual_seed(n ^ k)
    sample = values[torch.randint(n, (SAMPLE,), generator=gen).to(values.device)]
    pos = k * SAMPLE / n  # where the answer sits in the sample, counted from the top
    margin = 6.0 * (pos * (1 - k / n)) ** 0.5 + 8
    hi_rank, lo_rank = int(max(1, pos - margin)), int(min(SAMPLE, pos + margin))
    hi = _select(sample, hi_rank) if hi_rank > 1 else sample.max()
    lo = _select(sample, lo_rank)
    above = int((values > hi).sum())
    if above < k:
        band = values[(values <= hi) & (values >= lo)]
        if above + band.numel() >= k:
            return _select(band, k - above)
    return _select(values, k)


def trim_limit(magnitudes: Callable[[], torch.Tensor], numel: int, density: float) -> tuple[float | None, int]:
    """Where a trim at `density` cuts one ΔW: (threshold, or None to keep all; how many entries equal to the
    threshold are kept). `magnitudes()` (|ΔW| flattened) is only called when a threshold is needed."""
    k = keep_count(density, numel)
    if k >= numel:
        return (None, 0)
    if k == 0:
        return (float("inf"), 0)
    mag = magnitudes()
    thr = kth_largest(mag, k)
    return (float(thr), k - int((mag > thr).sum()))


def limit_mask(mag: torch.Tensor, threshold: float | None, tied_quota: int) -> tuple[torch.Tensor, int]:
    """The trim's keep-mask over `mag` (any slice of one |ΔW|, in index order) and how many tied entries it used.

    The tie rule, written once: entries above the threshold are kept, and of the entries equal to it the first
    `tied_quota` in index order — so exactly k entries are kept, as a full sort would keep them. A caller walking
    a ΔW in slices passes the quota left over from the slices before.
    """
    if threshold is None:
        return torch.ones_like(mag, dtype=torch.bool), 0
    mask = mag > threshold
    used = 0
    if tied_quota > 0:
        tied = (mag == threshold).view(-1).nonzero().squeeze(1)[:tied_quota]
        mask.view(-1)[tied] = True
        used = len(tied)
    return mask, used


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Boolean mask of the `density` fraction of entries of largest |delta| (threshold by one selection, not a
    full sort; ties by `limit_mask`)."""
    mag = delta.abs().reshape(-1)
    limit = trim_limit(lambda: mag, mag.numel(), density)
    return limit_mask(mag, *limit)[0].reshape(delta.shape)


# -- Step 1: trim -----------------------------------------------------------------------------
def trim(deltas: torch.Tensor, densities: tuple[float, ...]) -> torch.Tensor:
    """Zero all but the largest-magnitude `densities[i]` fraction of entries of each delta."""
    out = deltas.clone()
    for i, density in enumerate(densities):
        if density < 1:
            out[i].mul_(magnitude_mask(deltas[i], density))
    return out


# -- Step 2: elect sign -----------------------------------------------------------------------
@dataclass
class SignTotals:
    """What the election reads, summed over adapters: the trimmed, weighted mass and the number of positive and
    negative entries. Running sums of these over adapters give the same election as the stack."""

    mass: torch.Tensor
    n_pos: torch.Tensor
    n_neg: torch.Tensor

    def __iadd__(self, other: "SignTotals") -> "SignTotals":
        self.mass.add_(other.mass)
        self.n_pos.add_(other.n_pos)
        self.n_neg.add_(other.n_neg)
        return self


def sign_totals(weighted: torch.Tensor) -> SignTotals:
    """The election's sums over a stack of trimmed, weighted deltas (adapters along dim 0)."""
    return SignTotals(weighted.sum(dim=0), (weighted > 0).sum(dim=0, dtype=torch.int32),
                      (weighted < 0).sum(dim=0, dtype=torch.int32))


def elect(totals: SignTotals, rule: SignRule) -> torch.Tensor:
    """The elected sign γ (+1 / -1) of every entry; a tie (mass or count exactly balanced) elects +1."""
    up = totals.mass >= 0 if rule is SignRule.sum else totals.n_pos >= totals.n_neg
    return torch.where(up, 1.0, -1.0).to(totals.mass.dtype)


def elect_sign(weighted: torch.Tensor, rule: SignRule) -> torch.Tensor:
    return elect(sign_totals(weighted), rule)


def conflicts(totals: SignTotals, sign: torch.Tensor) -> tuple[int, int]:
    """(kept entries whose sign disagrees with the elected one, kept entries)."""
    disagree = int(torch.where(sign > 0, totals.n_neg, totals.n_pos).sum())
    return disagree, int((totals.n_pos + totals.n_neg).sum())


def sign_conflict_rate(weighted: torch.Tensor, sign: torch.Tensor) -> float:
    """Share of the non-zero trimmed entries whose sign disagrees with the elected one."""
    disagree, total = conflicts(sign_totals(weighted), sign)
    return disagree / total if total else 0.0


# -- Step 3: disjoint merge -------------------------------------------------------------------
@dataclass
class SignedSums:
    """The disjoint merge's sums over adapters, split by sign: Σ τ̂ over positive and over negative entries, and the
    adapters' weights summed over the same entries. Whichever sign is elected, its pair is the agreeing mean."""

    pos: torch.Tensor
    neg: torch.Tensor
    w_pos: torch.Tensor
    w_neg: torch.Tensor

    def __iadd__(self, other: "SignedSums") -> "SignedSums":
        for name in ("pos", "neg", "w_pos", "w_neg"):
            getattr(self, name).add_(getattr(other, name))
        return self


def signed_sums(weighted: torch.Tensor, weights: torch.Tensor) -> SignedSums:
    shape = (-1,) + (1,) * (weighted.dim() - 1)
    w = weights.reshape(shape).to(weighted.dtype)
    up, down = weighted > 0, weighted < 0
    return SignedSums(weighted.clamp(min=0).sum(dim=0), weighted.clamp(max=0).sum(dim=0),
                      (w * up).sum(dim=0), (w * down).sum(dim=0))


def merge_agreeing(sums: SignedSums, sign: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Σ_i w_i τ̂_i m_i / Σ_i w_i m_i over the entries agreeing with `sign` (0 where none agrees); without
    normalize, the numerator only."""
    up = sign > 0
    merged = torch.where(up, sums.pos, sums.neg)
    if normalize:
        divisor = torch.where(up, sums.w_pos, sums.w_neg)
        divisor[divisor == 0] = 1
        merged = merged / divisor
    return merged


def disjoint_merge(
    weighted: torch.Tensor, weights: torch.Tensor, sign: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    """The disjoint merge of a stack of trimmed, weighted deltas (m_i: adapter i's entry is non-zero and has the
    elected sign)."""
    return merge_agreeing(signed_sums(weighted, weights), sign, normalize)
