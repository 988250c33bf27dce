"""RegMean++ statistics (Nguyen et al., RegMean++, TMLR 2026): each block's input Grams are taken from the *partially
merged* model — blocks before it already carry the RegMean merge — instead of from each specialist alone, so a
block's merge sees the inputs the merged model will really feed it.

Block by block, in the model's order: every adapter's prompts run through the base with the merged ΔW of the
earlier blocks folded into its weights (adapters off), the forward pass stopping after the block; the block's
targeted modules get their Grams; RegMean merges the block (the same kernel as `regmean`) and its ΔW is folded in
before the next block. Inside a block the inputs come from the block's base weights (a block-wise variant: one pass
per block, not one per linear). The Grams are written as ordinary statistics files marked `inputs: merged` with the
parameters they were merged with, which `--method regmean_pp` checks; the base's weights are restored afterwards."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.cache import adapter_digest
from tiesmerge.calibration.prompts import Prompt, PromptFormat, prompts_digest, truncation_note
from tiesmerge.calibration.statistics import collection_setup, module_name, padded_batches, shared_gram, write_statistics
from tiesmerge.merge.methods.regmean import OFF_DIAGONAL, regmean_factors
from tiesmerge.merge.params import LAMBDA
from tiesmerge.merge.statistics import StatisticsMeta
from tiesmerge.merge.types import MethodParams

_BLOCK = re.compile(r"\.layers\.(\d+)\.")


class _Stop(Exception):
    """Raised after the block of interest: nothing later is computed."""


def block_of(module: str) -> int:
    m = _BLOCK.search("." + module)
    return int(m.group(1)) if m else 1 << 30  # modules outside the numbered blocks go last


@torch.no_grad()
def collect_pp(model, tokenizer, base: str, adapters: Mapping[str, Path], prompts: Mapping[str, Sequence[Prompt]],
               fmt: PromptFormat, params: Mapping[str, float], out_dir: Path, batch_size: int = 8,
               log: Callable[[str], None] = lambda m: None) -> dict[str, Path]:
    """RegMean++ statistics of every adapter, written to `out_dir/NAME.statistics.safetensors`."""
    names = list(adapters)
    setup = collection_setup(model)
    readers = {n: AdapterReader(p, n) for n, p in adapters.items()}
    weights = {n: float(params.get("weights", {}).get(n, 1.0)) for n in names}
    off = float(params.get(OFF_DIAGONAL.name, OFF_DIAGONAL.default))
    lam = float(params.get(LAMBDA.name, LAMBDA.default))
    linears = {module_name(n): m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = sorted({m for r in readers.values() for m, e in r.modules.items() if not e.embedding and m in linears},
                     key=lambda m: (block_of(m), m))
    blocks: dict[int, list[str]] = {}
    for m in targets:
        blocks.setdefault(block_of(m), []).append(m)
    layer_modules = {int(k.group(1)): mod for name, mod in model.named_modules()
                     if (k := re.search(r"\.layers\.(\d+)$", "." + module_name(name)))}
    texts = {n: [p.render(tokenizer, fmt) for p in prompts[n]] for n in names}
    for n in names:
        if (note := truncation_note(tokenizer, n, texts[n])) is not None:
            log(note)
    grams: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    tokens = {n: 0 for n in names}
    saved = {m: linears[m].weight.detach().clone() for m in targets}
    device = next(model.parameters()).device
    start = time.perf_counter()
    try:
        for b, mods in blocks.items():
            for n in names:
                g, tokens[n] = _block_grams(model, tokenizer, texts[n], mods, linears, layer_modules.get(b), device,
                                            batch_size)
                grams[n].update(g)
            for m in mods:  # merge the block and fold it in before the next block runs
                holders = [n for n in names if m in readers[n].modules]
                bs, as_ = [], []
                for n in holders:
                    a, bb = readers[n].factors(m, device)
                    bs.append(bb.float() * readers[n].modules[m].scale)
                    as_.append(a.float())
                p = MethodParams(weights=tuple(weights[n] for n in holders), densities=(1.0,) * len(holders),
                                 lam=lam, options={OFF_DIAGONAL.name: off})
                bm, am = regmean_factors(bs, as_, [grams[n][m] for n in holders], p)
                linears[m].weight.data += (bm @ am).to(linears[m].weight.dtype)
            log(f"regmean++ block {b}: {len(mods)} modules ({time.perf_counter() - start:.0f} s)")
    finally:
        for m, w in saved.items():
            linears[m].weight.data.copy_(w)
    out = {}
    for n in names:
        meta = StatisticsMeta(adapter_digest(adapters[n]), base, prompts_digest(prompts[n], fmt), fmt.value,
                              len(texts[n]), tokens[n], inputs="merged",
                              merged_with={"off_diagonal": off, "lambda": lam, "adapters": sorted(names),
                                           "weights": weights}, collected_with=setup)
        out[n] = write_statistics(Path(out_dir) / f"{n}.regmean_pp.safetensors", grams[n], meta)
    return out


def _block_grams(model, tokenizer, texts, mods, linears, layer, device, batch_size):
    sums: dict[str, torch.Tensor] = {}
    mask_now: list[torch.Tensor] = []

    gram = shared_gram()

    def hook(name):
        def fn(module, args):
            g = gram(args[0], mask_now[0])
            sums[name] = g.clone() if name not in sums else sums[name].add_(g)
        return fn

    def stop(module, args, output):
        raise _Stop

    handles = [linears[m].register_forward_pre_hook(hook(m)) for m in mods]
    if layer is not None:
        handles.append(layer.register_forward_hook(stop))
    tokens = 0
    try:
        for ids, mask in padded_batches(tokenizer, texts, batch_size, device):
            mask_now[:] = [mask.reshape(-1).bool()]
            try:
                model(input_ids=ids, attention_mask=mask)
            except _Stop:
                pass
            tokens += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return {k: (v / max(tokens, 1)).float().contiguous() for k, v in sums.items()}, tokens
