"""The PEFT drop-in: `add_merged_adapter(model, …)` takes the arguments of PEFT's `model.add_weighted_adapter(…)`,
so moving a training script over is a one-word edit:

    model.add_weighted_adapter(["math", "code"], [0.5, 0.5], "merged", combination_type="ties", density=0.2)
    tiesmerge.peft.add_merged_adapter(model, ["math", "code"], [0.5, 0.5], "merged", combination_type="ties",
                                      density=0.2)

It reads the named adapters' factors and scales from the model, merges them exactly in ΔW space (or core space:
`space="core"`) with tiesmerge's kernels — the same numbers as `tiesmerge merge` on the saved adapters — and adds
the result as a plain LoRA adapter with scale exactly 1 (r = lora_alpha, no RSLoRA), which `set_adapter` and
`save_pretrained` use as usual. Where PEFT merges A and B separately (`linear`, non-svd `ties`), or writes a merged
RSLoRA adapter √R too strong (PEFT ≤ 0.21.2, issue #3761), this is the ΔW the weights ask for.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from tiesmerge.adapters.memory import LoraFactors
from tiesmerge.api.merging import merge_factors
from tiesmerge.errors import BadInputError
from tiesmerge.merge.memory import MergedFactors

# PEFT's combination_type → (tiesmerge method, rank when svd_rank is not given: "max" input rank or "full" = Σ r)
COMBINATIONS = {
    "svd": ("task_arithmetic", "max"),
    "linear": ("task_arithmetic", "max"),  # PEFT averages A and B separately (approximate); this is ΔW-exact
    "cat": ("task_arithmetic", "full"),
    "ties": ("ties", "max"),
    "ties_svd": ("ties", "max"),
    "dare_ties": ("dare_ties", "max"),
    "dare_ties_svd": ("dare_ties", "max"),
    "dare_linear": ("dare_linear", "max"),
    "dare_linear_svd": ("dare_linear", "max"),
    "magnitude_prune": ("magnitude_prune", "max"),
    "magnitude_prune_svd": ("magnitude_prune", "max"),
}
SIGNS = {"total": "sum", "frequency": "count"}


def _lora_model(model):
    from peft.tuners.lora import LoraModel

    inner = getattr(model, "base_model", None)
    if isinstance(inner, LoraModel):
        return inner
    if isinstance(model, LoraModel):
        return model
    raise BadInputError("add_merged_adapter needs a PeftModel (or LoraModel) holding LoRA adapters")


def read_adapter(lora_model, name: str) -> LoraFactors:
    """One loaded adapter's factors and effective scales (PEFT's `scaling`, RSLoRA and patterns included)."""
    from peft.tuners.lora import LoraLayer

    factors, scales, embedding = {}, {}, set()
    for module_name, module in lora_model.model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if name in module.lora_A:
            a, b = module.lora_A[name].weight, module.lora_B[name].weight
        elif name in getattr(module, "lora_embedding_A", {}):
            a, b = module.lora_embedding_A[name], module.lora_embedding_B[name]
            embedding.add(module_name)
        else:
            continue
        factors[module_name] = (a.detach(), b.detach())
        scales[module_name] = float(module.scaling[name])
    if not factors:
        raise BadInputError(f"adapter {name!r} has no LoRA layers in this model (loaded: "
                            f"{', '.join(lora_model.peft_config)})")
    base = getattr(lora_model.peft_config[name], "base_model_name_or_path", None)
    return LoraFactors(factors, scales, base, frozenset(embedding))


def _names(value: Any, what: str) -> list[str]:
    """A list of adapter names; a str is one name, never a sequence of one-letter names."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a list of adapter names, got {type(value).__name__} {value!r}")
    names = list(value)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise TypeError(f"{what}: every adapter name must be a non-empty string, got {bad[0]!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadInputError(f"{what}: adapter {twice[0]!r} is named twice; name each adapter once")
    return names


def _weights(value: Any) -> list[float]:
    import math

    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"weights must be a list of numbers, got {type(value).__name__} {value!r}")
    out = []
    for w in value:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise TypeError(f"weights must be finite numbers, got {w!r}")
        out.append(float(w))
    return out


def add_merged_adapter(model, adapters: Sequence[str], weights: Sequence[float], adapter_name: str,
                       combination_type: str | None = None, svd_rank: int | None = None, svd_clamp: float | None = None,
                       svd_full_matrices: bool = True, svd_driver: str | None = None, density: float | None = None,
                       majority_sign_method: str = "total", **tiesmerge_options: Any) -> MergedFactors:
    """PEFT's `add_weighted_adapter`, merged exactly by tiesmerge; returns the MergedFactors (report included).

    `combination_type` picks the method as PEFT names it (svd/linear/cat → task arithmetic, ties/ties_svd → TIES,
    dare_* and magnitude_prune* → mergekit's kernels); `tiesmerge_options` override it with any tiesmerge method
    and parameter: `method="iso_c"`, `space="core"`, `rank=64`, `lam=1.2`, `sign="count"`, … The output rank is
    `svd_rank`, else the largest input rank (`cat`: the sum, lossless). `svd_full_matrices` / `svd_driver` only
    choose how PEFT computes its SVD and are ignored; `svd_clamp` (clipping the factors) is refused.

    Example:

        >>> from tiesmerge.peft import add_merged_adapter
        >>> add_merged_adapter(model, ["math", "code"], [0.5, 0.5], "merged", combination_type="ties", density=0.2)
        >>> model.set_adapter("merged")
    """
    lora_model = _lora_model(model)
    if not isinstance(adapter_name, str) or not adapter_name.strip():
        raise TypeError(f"adapter_name must be a non-empty string, got {adapter_name!r}")
    adapters, weights = _names(adapters, "adapters"), _weights(weights)
    if combination_type is not None and "method" in tiesmerge_options:
        raise BadInputError(f"combination_type={combination_type!r} and method={tiesmerge_options['method']!r} both "
                            "name the method; give one of them")
    combination_type = "svd" if combination_type is None else combination_type
    if combination_type not in COMBINATIONS:
        raise BadInputError(f"combination_type {combination_type!r} is not one of {', '.join(COMBINATIONS)}")
    if svd_clamp is not None:
        raise BadInputError("svd_clamp is not supported: it clips the factors' entries, so the adapter would not be "
                            "the merged ΔW; pass svd_rank (or rank=) to bound the size instead")
    if majority_sign_method not in SIGNS:
        raise BadInputError(f"majority_sign_method {majority_sign_method!r}: use total or frequency")
    if adapter_name in lora_model.peft_config:
        raise BadInputError(f"an adapter named {adapter_name!r} already exists in the model; choose another name "
                            "(PEFT's add_weighted_adapter silently keeps the old one)")
    if len(adapters) != len(weights) or not adapters:
        raise BadInputError(f"{len(adapters)} adapters and {len(weights)} weights: give one weight per adapter")
    missing = [a for a in adapters if a not in lora_model.peft_config]
    if missing:
        raise BadInputError(f"adapter(s) {', '.join(map(repr, missing))} are not loaded in the model "
                            f"(loaded: {', '.join(lora_model.peft_config)})")
    inputs = {name: read_adapter(lora_model, name) for name in adapters}
    method, rank_rule = COMBINATIONS[combination_type]
    options = dict(tiesmerge_options)
    method = options.pop("method", method)
    max_rank = max(a.shape[0] for f in inputs.values() for a, _ in f.factors.values())
    rank = options.pop("rank", svd_rank if svd_rank is not None else ("full" if rank_rule == "full" else max_rank))
    reads = _reads(method)
    params: dict[str, Any] = {}
    if density is not None and "density" in reads:  # as in PEFT: density applies to the methods that trim
        params["density"] = density
    if "sign" in reads and "sign" not in options:
        params["sign"] = SIGNS[majority_sign_method]
    merged = merge_factors(inputs, weights=weights, method=method, rank=rank, **{**params, **options})
    _add_to_model(model, lora_model, adapters[0], adapter_name, merged)
    return merged


def _reads(method: Any) -> set[str]:
    from tiesmerge.merge.registry import get
    from tiesmerge.merge.types import Method

    try:
        return {p.name for p in get(Method(getattr(method, "value", method))).parameters}
    except ValueError:
        return set()  # an unknown method: the merge names it in its one-line error


def _add_to_model(model, lora_model, template: str, adapter_name: str, merged: MergedFactors) -> None:
    """Inject the merged adapter (PEFT's own injection, config from the first input's) and copy its factors in."""
    from tiesmerge.adapters.writer import exact_target_regex

    cfg = merged.config
    config = dataclasses.replace(lora_model.peft_config[template], r=cfg["r"], lora_alpha=cfg["lora_alpha"],
                                 use_rslora=False, rank_pattern=dict(cfg["rank_pattern"]),
                                 alpha_pattern=dict(cfg["alpha_pattern"]),
                                 target_modules=exact_target_regex(list(merged.factors)))
    if hasattr(config, "use_dora"):
        config = dataclasses.replace(config, use_dora=False)
    lora_model.peft_config[adapter_name] = config
    try:
        lora_model.inject_adapter(lora_model.model, adapter_name)
        _copy_factors(lora_model, adapter_name, merged)
    except BaseException:
        if adapter_name in lora_model.peft_config:  # leave the model as it was
            try:
                lora_model.delete_adapter(adapter_name)
            except Exception:  # injection failed part-way: drop what PEFT recorded of it
                lora_model.peft_config.pop(adapter_name, None)
        raise


def _copy_factors(lora_model, adapter_name: str, merged: MergedFactors) -> None:
    with torch.no_grad():
        for module_name, (a, b) in merged.factors.items():
            layer = lora_model.model.get_submodule(module_name)
            if adapter_name in layer.lora_A:
                dst_a, dst_b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            else:
                dst_a, dst_b = layer.lora_embedding_A[adapter_name], layer.lora_embedding_B[adapter_name]
            if tuple(dst_a.shape) != tuple(a.shape) or tuple(dst_b.shape) != tuple(b.shape):
                raise BadInputError(f"{module_name}: PEFT made the new adapter's factors {list(dst_a.shape)} / "
                                    f"{list(dst_b.shape)}, the merge {list(a.shape)} / {list(b.shape)}")
            dst_a.copy_(a.to(dst_a.dtype))
            dst_b.copy_(b.to(dst_b.dtype))
            dst_a.requires_grad_(False)
            dst_b.requires_grad_(False)
