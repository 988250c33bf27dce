"""The three TIES steps as pure functions on a stack of deltas (adapters along dim 0).

Yadav et al., "TIES-Merging", NeurIPS 2023 (arXiv 2306.01708): trim, elect sign, disjoint merge.
"""

from __future__ import annotations

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


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Boolean mask of the `density` fraction of entries of largest |delta|.

    The threshold comes from one selection (kthvalue), not a full sort; entries tied with the
    threshold are kept in index order until exactly k are kept, so the kept set is the one a
    full sort would give (up to the order of exact ties, which a sort leaves arbitrary too).
    """
    numel = delta.numel()
    k = keep_count(density, numel)
    if k >= numel:
        return torch.ones_like(delta, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(delta, dtype=torch.bool)
    mag = delta.abs().reshape(-1)
    threshold = kth_largest(mag, k)
    mask = mag > threshold
    missing = k - int(mask.sum())
    if missing > 0:
        ties = (mag == threshold).nonzero().squeeze(1)[:missing]
        mask[ties] = True
    return mask.reshape(delta.shape)


# -- Step 1: trim -----------------------------------------------------------------------------
def trim(deltas: torch.Tensor, densities: tuple[float, ...]) -> torch.Tensor:
    """Zero all but the largest-magnitude `densities[i]` fraction of entries of each delta."""
    out = deltas.clone()
    for i, density in enumerate(densities):
        if density < 1:
            out[i].mul_(magnitude_mask(deltas[i], density))
    return out


# -- Step 2: elect sign -----------------------------------------------------------------------
def elect_sign(weighted: torch.Tensor, rule: SignRule) -> torch.Tensor:
    """The elected sign γ (+1 / -1) of every entry; a tie (sum exactly 0) elects +1."""
    if rule is SignRule.sum:
        total = weighted.sum(dim=0)
    else:
        total = weighted.sign().sum(dim=0)
    return torch.where(total >= 0, 1.0, -1.0).to(weighted.dtype)


# -- Step 3: disjoint merge -------------------------------------------------------------------
def agreement(weighted: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """m_i: 1 where adapter i's trimmed entry is non-zero and has the elected sign."""
    return weighted.sign() == sign


def disjoint_merge(
    weighted: torch.Tensor, weights: torch.Tensor, sign: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    """Σ_i w_i τ̂_i m_i / Σ_i w_i m_i (0 where nothing agrees); without normalize, the numerator only."""
    mask = agreement(weighted, sign).to(weighted.dtype)
    merged = (weighted * mask).sum(dim=0)
    if normalize:
        shape = (-1,) + (1,) * (weighted.dim() - 1)
        divisor = (weights.reshape(shape) * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        merged /= divisor
    return merged


def sign_conflict_rate(weighted: torch.Tensor, sign: torch.Tensor) -> float:
    """Share of the non-zero trimmed entries whose sign disagrees with the elected one."""
    nonzero = weighted != 0
    total = int(nonzero.sum())
    if total == 0:
        return 0.0
    disagree = int((nonzero & (weighted.sign() != sign)).sum())
    return disagree / total
