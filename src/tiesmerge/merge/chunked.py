"""Full-space TIES from LoRA factors in bounded memory and one pass: ΔW rows are formed chunk by chunk.

The trim needs each ΔW_t's k-th largest magnitude before any entry can be trimmed. Rather than a first pass that
forms every ΔW_t to select it, a fixed-seed sample of ΔW_t's entries (dot products of factor rows and columns, no
ΔW) brackets that threshold in [lo, hi]. The single pass over row chunks then forms each adapter's chunk once
(a GEMM), trims it provisionally at hi (what lies above hi is kept by the exact trim too), weights it and elects
and merges with the same step functions as the dense kernel (steps.py), while it counts the entries above hi and
records the few positions where some adapter's magnitude lies inside its bracket, with every adapter's value
there. After the pass the exact threshold is selected inside the bracket, and those positions alone are
trimmed, elected and merged again with their final trims (ties at the threshold kept in index order, as the dense
trim keeps them). The result equals the dense kernel (`methods/ties.py`) entry for entry; the stack of T dense
ΔW never exists, nor does any whole ΔW_t. A bracket that misses (a ~1e-9 event) falls back to the two-pass
kernel: pass 1 selects the thresholds exactly, pass 2 trims with them (`limits`; a sweep's ThresholdTable
supplies them too). Small modules take the two-pass kernel: their selection costs less than a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from tiesmerge.merge import steps
from tiesmerge.merge.types import MergeOutput, MergeStats, MethodParams

CHUNK_ELEMENTS = 1 << 22  # entries per row chunk (16 MiB in fp32; T + about eight such buffers are live)
SAMPLE = 1 << 18  # entries of each ΔW_t sampled to bracket its trim threshold (the bracket then holds ~1 %)


def chunk_rows(n: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, n))


def chunked_product(b: torch.Tensor, a: torch.Tensor, rows: int) -> torch.Tensor:
    """b @ a formed row chunk by row chunk, so its entries are bitwise those that pass 2 recomputes
    (a GEMM over a few rows may round differently from the same rows of one big GEMM)."""
    out = torch.empty((b.shape[0], a.shape[1]), dtype=torch.float32, device=b.device)
    for r0 in range(0, b.shape[0], rows):
        torch.matmul(b[r0: r0 + rows], a, out=out[r0: r0 + rows])
    return out


def exact_limit(b: torch.Tensor, a: torch.Tensor, density: float, rows: int) -> tuple[float | None, int]:
    """(threshold or None for keep-all, number of entries equal to it that are kept) of ΔW = b @ a, selected from the
    whole |ΔW| (formed only when a threshold is needed)."""
    return steps.trim_limit(lambda: chunked_product(b, a, rows).abs_().reshape(-1), b.shape[0] * a.shape[1], density)


def thresholds(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], densities: Sequence[float], rows: int):
    """Per adapter: its exact_limit."""
    return [exact_limit(b, a, density, rows) for b, a, density in zip(bs, as_, densities)]


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


def sampled_magnitudes(b: torch.Tensor, a: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """|ΔW| at `count` uniformly drawn (row, column) positions of ΔW = b @ a, from the factors alone."""
    m, n = b.shape[0], a.shape[1]
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(m, (count,), generator=gen).to(b.device)
    cols = torch.randint(n, (count,), generator=gen).to(b.device)
    a_t = a.T.contiguous()  # row gathers, not strided column gathers
    out = torch.empty(count, dtype=torch.float32, device=b.device)
    step = 1 << 14
    for s0 in range(0, count, step):
        out[s0: s0 + step] = (b[rows[s0: s0 + step]] * a_t[cols[s0: s0 + step]]).sum(1)
    return out.abs_()


@dataclass
class Bracket:
    """One adapter's trim in the one-pass kernel: keep its k largest |ΔW_t|, whose k-th lies in [lo, hi]."""

    k: int
    lo: float
    hi: float
    above: int = 0  # entries seen so far with magnitude > hi

    def limit(self, band_mags: torch.Tensor) -> tuple[float, int] | None:
        """The exact (threshold, tied entries kept) from the magnitudes inside the bracket (all of them, any order),
        or None when the bracket missed the k-th largest."""
        need = self.k - self.above
        if not 0 < need <= band_mags.numel():
            return None
        thr = steps.kth_largest(band_mags, need)
        return float(thr), need - int((band_mags > thr).sum())


MAX_TIED = 0.01  # a bracket whose ends more than this share of the sample (and 8) sit on is not used
MAX_INSIDE = 0.125  # positions inside the brackets beyond this share of ΔW (and 4 × sample): select exactly instead


def plan_trims(bs, as_, densities, sample: int, rows: int) -> list[Bracket | tuple[float | None, int]]:
    """Per adapter: a Bracket, or an exact limit — where the trim keeps all or nothing, or where many entries share
    the threshold's magnitude (the zeros of an untrained or sparse B: the bracket would hold most of ΔW), selected
    from the whole |ΔW_t| as the two-pass kernel does."""
    plan = []
    for t, (b, a, density) in enumerate(zip(bs, as_, densities)):
        numel = b.shape[0] * a.shape[1]
        k = steps.keep_count(density, numel)
        if k >= numel:
            plan.append((None, 0))
        elif k == 0:
            plan.append((float("inf"), 0))
        else:
            sample_mags = sampled_magnitudes(b, a, sample, seed=numel ^ k ^ t)
            lo, hi = steps.bracket(sample_mags, k, numel)
            tied = steps.count(((sample_mags == lo) | (sample_mags == hi)).float())
            if tied > max(8, MAX_TIED * sample):
                plan.append(exact_limit(b, a, density, rows))
            else:
                plan.append(Bracket(k, lo, hi))
    return plan


def _keep(mag: torch.Tensor, trim, quota: list[int], t: int, out: torch.Tensor) -> torch.Tensor:
    """Step 1's keep-mask (0./1.) of one chunk: exact for a limit (carrying its tie quota), provisional (> hi, so
    entries inside the bracket are left out for now) for a Bracket."""
    if isinstance(trim, Bracket):
        return torch.gt(mag, trim.hi, out=out)
    mask, used = steps.limit_mask(mag, trim[0], quota[t], out=out)
    quota[t] -= used
    return mask


def _merge_rows(xs: list[torch.Tensor], keeps: list[torch.Tensor], p: MethodParams, normalize: bool,
                nonzero_kept: Sequence[float | None] = (),
                out: torch.Tensor | None = None) -> tuple[torch.Tensor, list[int], int, int]:
    """Steps 1–3 on the same rows (or positions) of every adapter's ΔW: trim (in place), weight, elect, merge.
    Returns (merged, kept non-zero entries per adapter, agreeing entries, conflicting entries). `nonzero_kept[t]`, when not
    None, is a floor ≥ 0 that every magnitude adapter t's mask keeps lies above (its threshold): the mask keeps no
    zero, so counting the mask counts what it keeps."""
    kept, weighted_nonzero = [], []
    for t, (x, keep, w) in enumerate(zip(xs, keeps, p.weights)):
        x.mul_(keep)  # Step 1: trim, then weight: τ̂_t = w_t · trim(ΔW_t)
        floor = nonzero_kept[t] if t < len(nonzero_kept) else None
        k = steps.count(keep) if floor is not None else int(torch.count_nonzero(x))
        kept.append(k)
        x.mul_(w)
        # w_t · x is non-zero wherever x is when no kept |x| (all > floor) can underflow: then τ̂_t's count is known
        weighted_nonzero.append(k if floor is not None and floor * abs(w) > 1e-30 else None)
    sign = steps.elect_sign(xs, p.sign)  # Step 2: elect the sign of every entry
    merged, agreeing, disagreeing = steps.merge_agreeing(xs, p.weights, sign, normalize, out=out,
                                                         nonzero=weighted_nonzero)  # Step 3
    return merged, kept, agreeing, disagreeing


def ties_from_factors(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], p: MethodParams,
                      chunk_elements: int = CHUNK_ELEMENTS, limits=None, sample: int = SAMPLE) -> MergeOutput:
    """TIES of ΔW_t = bs[t] @ as_[t] (scales already folded into bs), equal to `ties(stack, p)`, in one pass over
    ΔW's rows (see the module docstring); `limits` (from a ThresholdTable) gives the exact trims up front."""
    m, n = bs[0].shape[0], as_[0].shape[1]
    rows = chunk_rows(n, chunk_elements)
    two_pass = lambda: ties_from_factors(bs, as_, p, chunk_elements, thresholds(bs, as_, p.densities, rows))  # noqa: E731
    if limits is None and m * n <= 4 * sample:
        limits = thresholds(bs, as_, p.densities, rows)
    plan = list(limits) if limits is not None else plan_trims(bs, as_, p.densities, sample, rows)
    bracketed = [t for t, trim in enumerate(plan) if isinstance(trim, Bracket)]
    quota = [0 if isinstance(trim, Bracket) else trim[1] for trim in plan]
    normalize = True if p.normalize is None else p.normalize
    merged = torch.empty((m, n), dtype=torch.float32, device=bs[0].device)
    kept = agreeing = disagreeing = 0
    band_at, band_values, band_keeps, stored = [], [], [], 0  # positions inside some bracket; ΔW and trims there
    nonzero_kept = [max(trim.hi, 0.0) if isinstance(trim, Bracket) else
                    (trim[0] if trim[0] is not None and trim[0] > 0 else None) for trim in plan]
    new = lambda: torch.empty((min(rows, m), n), dtype=torch.float32, device=merged.device)  # noqa: E731
    xs_buf, keep_buf, mag, band = [new() for _ in bs], [new() for _ in bs], new(), new()
    for r0 in range(0, m, rows):
        r1 = min(m, r0 + rows)
        xs = [torch.matmul(b[r0:r1], a, out=buf[: r1 - r0]) for b, a, buf in zip(bs, as_, xs_buf)]
        keeps = []
        inside = band[: r1 - r0].zero_() if bracketed else None
        for t, x in enumerate(xs):
            torch.abs(x, out=mag[: r1 - r0])
            keeps.append(_keep(mag[: r1 - r0], plan[t], quota, t, keep_buf[t][: r1 - r0]))
            if isinstance(plan[t], Bracket):  # inside its bracket: ≥ lo and not > hi
                inside.add_(torch.ge(mag[: r1 - r0], plan[t].lo, out=mag[: r1 - r0])).sub_(keeps[t])
        if bracketed:
            at = inside.view(-1).nonzero().squeeze(1)
            stored += at.numel()
            if stored > max(4 * sample, MAX_INSIDE * m * n):  # far more inside the brackets than sampled: select exactly
                return two_pass()
            band_at.append(at + r0 * n)
            band_values.append(torch.stack([x.view(-1)[at] for x in xs]))
            band_keeps.append(torch.stack([keep.view(-1)[at] for keep in keeps]))  # the pass's trims there
        _, k, a, d = _merge_rows(xs, keeps, p, normalize, nonzero_kept, out=merged[r0:r1])
        kept, agreeing, disagreeing = kept + sum(k), agreeing + a, disagreeing + d
        for t in bracketed:  # its mask (> hi ≥ 0) keeps no zero: what it kept is what lies above hi
            plan[t].above += k[t]
    del xs_buf, keep_buf, mag, band
    if bracketed:
        at, values, provisional = torch.cat(band_at), torch.cat(band_values, 1), list(torch.cat(band_keeps, 1))
        del band_at, band_values, band_keeps
        final = list(provisional)  # an exact limit's trims (its tie quota spent in index order) stand as the pass made them
        for t in bracketed:
            mag = values[t].abs()
            limit = plan[t].limit(mag[(mag >= plan[t].lo) & (mag <= plan[t].hi)])
            if limit is None:  # the sample's bracket missed: select exactly (two passes)
                return two_pass()
            final[t] = steps.limit_mask(mag, *limit)[0]
        # what the pass counted at these positions (bracketed trims at hi) is replaced by their final trims
        _, *before = _merge_rows(list(values.clone()), provisional, p, normalize)
        fixed, *after = _merge_rows(list(values), final, p, normalize)
        merged.view(-1)[at] = fixed
        kept, agreeing, disagreeing = (kept + sum(after[0]) - sum(before[0]), agreeing + after[1] - before[1],
                                       disagreeing + after[2] - before[2])
    if p.lam != 1:
        merged.mul_(p.lam)
    stats = MergeStats(kept_density=kept / (len(bs) * m * n) if m * n else 0.0,
                       sign_conflict_rate=steps.conflict_rate(agreeing, disagreeing))
    return MergeOutput(merged, stats)
