"""The rest of mergekit's task-arithmetic family, applied to ΔW stacks through `merge_tensors`.

The base is a zero tensor, so mergekit's "task vectors" are exactly the adapters' ΔW. Random
methods (DARE, DELLA) draw from a generator seeded per module, so a merge is reproducible and
does not depend on module order.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Any

import torch

from tiesmerge.merge.params import EPSILON, GAMMA, RESCALE
from tiesmerge.merge.types import MergeOutput, MergeStats, Method, MethodParams


@lru_cache(maxsize=None)
def mergekit_method(method: Method):
    """mergekit's method object; `magnitude_prune` is its generalized kernel with magnitude trim, no sign election."""
    from mergekit import merge_methods
    from mergekit.merge_methods.generalized_task_arithmetic import GeneralizedTaskArithmeticMerge
    from mergekit.sparsify import SparsificationMethod

    if method is Method.magnitude_prune:
        return GeneralizedTaskArithmeticMerge(
            consensus_method=None,
            sparsification_method=SparsificationMethod.magnitude,
            default_normalize=False,
            default_rescale=False,
            method_name="magnitude_prune",
            method_pretty_name="Magnitude pruning",
            method_reference_url=None,
        )
    return merge_methods.get(method.value)


def mergekit_parameters(p: MethodParams) -> dict[str, Any]:
    params: dict[str, Any] = {"weight": list(p.weights), "density": list(p.densities), "lambda": p.lam}
    for key, value in (("normalize", p.normalize), ("rescale", p.option(RESCALE))):
        if value is not None:
            params[key] = value
    for key, value in (("gamma", p.option(GAMMA)), ("epsilon", p.option(EPSILON))):
        if value is not None:  # None: mergekit's own default
            params[key] = [value] * len(p.weights)
    return params


DELLA_EPSILON = 0.15  # mergekit's default


def della_check(params, densities) -> None:
    """DELLA draws keep probabilities in density ± epsilon: that interval must lie inside (0, 1)."""
    eps = params.get(EPSILON) if params.get(EPSILON) is not None else DELLA_EPSILON
    for d in densities:
        if d < 1 and not (0 < d - eps and d + eps < 1):
            raise ValueError(f"DELLA needs density ± epsilon inside (0, 1); density {d}, epsilon {eps}")


def module_seed(seed: int, module: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(module.encode())) % (2**63)


def via_mergekit(method: Method, deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
    base = torch.zeros_like(deltas[0])
    devices = [deltas.device] if deltas.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(p.seed)
        merged = _merge_tensors([base, *deltas.unbind(0)], method, p)
    return MergeOutput(merged, MergeStats())


def _merge_tensors(tensors: list[torch.Tensor], method: Method, p: MethodParams) -> torch.Tensor:
    from mergekit.merge_methods.api import merge_tensors

    return merge_tensors(tensors, mergekit_method(method), base_index=0, parameters=mergekit_parameters(p))


def bind(method: Method):
    """A `(deltas, params) -> MergeOutput` function for one mergekit-backed method."""

    def run(deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
        return via_mergekit(method, deltas, p)

    run.__name__ = f"{method.value}_via_mergekit"
    return run
