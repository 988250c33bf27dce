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

    @classmethod
    def zeros(cls, like: torch.Tensor) -> "SignTotals":
        count = dict(dtype=torch.int32, device=like.device)
        return cls(torch.zeros_like(like), torch.zeros(like.shape, **count), torch.zeros(like.shape, **count))

    def add_(self, x: torch.Tensor, up: torch.Tensor | None = None, down: torch.Tensor | None = None) -> "SignTotals":
        """Fold in one adapter's trimmed, weighted entries, in place (the chunked kernel's running sums);
        `up` / `down` (x > 0, x < 0) may be passed in when already computed."""
        self.mass.add_(x)
        self.n_pos.add_(x > 0 if up is None else up)
        self.n_neg.add_(x < 0 if down is None else down)
        return self


def sign_totals(weighted: torch.Tensor) -> SignTotals:
    """The election's sums over a stack of trimmed, weighted deltas (adapters along dim 0)."""
    totals = SignTotals.zeros(weighted[0])
    for x in weighted:
        totals.add_(x)
    return totals


def elect_up(totals: SignTotals, rule: SignRule) -> torch.Tensor:
    """Where + is elected (a boolean mask); a tie (mass or count exactly balanced) elects +."""
    return totals.mass >= 0 if rule is SignRule.sum else totals.n_pos >= totals.n_neg


def elect(totals: SignTotals, rule: SignRule) -> torch.Tensor:
    """The elected sign γ (+1 / -1) of every entry."""
    return torch.where(elect_up(totals, rule), 1.0, -1.0).to(totals.mass.dtype)


def elect_sign(weighted: torch.Tensor, rule: SignRule) -> torch.Tensor:
    return elect(sign_totals(weighted), rule)


def conflicts(totals: SignTotals, up: torch.Tensor) -> tuple[int, int]:
    """(kept entries whose sign disagrees with the elected one, kept entries); `up`: where + is elected."""
    disagree = int(torch.where(up, totals.n_neg, totals.n_pos).sum())
    return disagree, int((totals.n_pos + totals.n_neg).sum())


def sign_conflict_rate(weighted: torch.Tensor, sign: torch.Tensor) -> float:
    """Share of the non-zero trimmed entries whose sign disagrees with the elected one."""
    disagree, total = conflicts(sign_totals(weighted), sign > 0)
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

    @classmethod
    def zeros(cls, like: torch.Tensor) -> "SignedSums":
        return cls(*(torch.zeros_like(like) for _ in range(4)))

    def add_(self, x: torch.Tensor, weight: float, up: torch.Tensor | None = None,
             down: torch.Tensor | None = None) -> "SignedSums":
        """Fold in one adapter's trimmed, weighted entries and its weight, in place."""
        self.pos.add_(x.clamp(min=0))
        self.neg.add_(x.clamp(max=0))
        self.w_pos.add_((x > 0 if up is None else up).to(x.dtype), alpha=weight)
        self.w_neg.add_((x < 0 if down is None else down).to(x.dtype), alpha=weight)
        return self


def fold_(totals: SignTotals, sums: SignedSums, x: torch.Tensor, weight: float) -> None:
    """Fold one adapter's trimmed, weighted entries into both steps' sums (signs compared once)."""
    up, down = x > 0, x < 0
    totals.add_(x, up, down)
    sums.add_(x, weight, up, down)


def signed_sums(weighted: torch.Tensor, weights) -> SignedSums:
    """The disjoint merge's sums over a stack of trimmed, weighted deltas (adapters along dim 0)."""
    sums = SignedSums.zeros(weighted[0])
    for x, w in zip(weighted, weights):
        sums.add_(x, float(w))
    return sums


def merge_agreeing(sums: SignedSums, up: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Σ_i w_i τ̂_i m_i / Σ_i w_i m_i over the entries agreeing with the elected sign (`up`: where + is elected;
    0 where none agrees); without normalize, the numerator only."""
    merged = torch.where(up, sums.pos, sums.neg)
    if normalize:
        divisor = torch.where(up, sums.w_pos, sums.w_neg)
        divisor[divisor == 0] = 1
        merged.div_(divisor)
    return merged


def disjoint_merge(
    weighted: torch.Tensor, weights: torch.Tensor, sign: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    """The disjoint merge of a stack of trimmed, weighted deltas (m_i: adapter i's entry is non-zero and has the
    elected sign)."""
    return merge_agreeing(signed_sums(weighted, weights), sign > 0, normalize)
