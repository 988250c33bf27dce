"""Collect RegMean's statistics: with one adapter active, run its own calibration prompts through the base and
accumulate, at every LoRA-targeted linear, the Gram E[x xᵀ] of the layer's input over the prompts' real (unpadded)
tokens. Streamed batch by batch in float64 (one d_in × d_in sum per module; nothing per token is kept), written as
one safetensors file per adapter (merge/statistics.py reads it), cached by (adapter content, prompts, base)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch

from tiesmerge.cache import adapter_digest, cache_dir, cache_key
from tiesmerge.calibration.prompts import Prompt, PromptFormat, encode_prompt, prompts_digest, truncation_note
from tiesmerge.merge.statistics import StatisticsMeta

STATS_VERSION = 1


def statistics_path(adapter: Path, prompts: Sequence[Prompt], fmt: PromptFormat, root: Path | None = None) -> Path:
    """Where the cache keeps an adapter's statistics for these prompts (the file's metadata names the base)."""
    key = cache_key("statistics", STATS_VERSION, adapter_digest(adapter), prompts_digest(prompts, fmt))
    return (root or cache_dir()) / "statistics" / f"{Path(adapter).name}-{key}.safetensors"


def base_fingerprint(path: str | Path | None) -> str | None:
    """What identifies a base's weights without reading them: its config and each weight file's name, size and
    modification time (a base replaced at the same path gets another fingerprint); None when it is not a folder."""
    import hashlib

    if not path or not Path(path).is_dir():
        return None
    folder = Path(path)
    h = hashlib.sha256()
    config = folder / "config.json"
    h.update(config.read_bytes() if config.is_file() else b"")
    for f in sorted(folder.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".gguf", ".pt") and f.is_file():
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def collection_setup(model) -> dict:
    """How the statistics were collected: the base's fingerprint, its dtype and quantization. Statistics collected
    otherwise differ (bf16 or 4-bit inputs: ~6 % off a float32 run) and are not reused for this run."""
    quant = getattr(model, "quantization_method", None) or (
        "nf4" if getattr(model, "is_loaded_in_4bit", False) else None)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return {"base_fingerprint": base_fingerprint(getattr(model, "name_or_path", None)),
            "dtype": str(dtype).removeprefix("torch."), "quantization": str(quant) if quant else None}


def cached_setup(path: Path) -> tuple[str | None, dict | None]:
    """(base, collected_with) of a statistics file; (None, None) when it cannot be read."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["meta"])
        return meta["base"], meta.get("collected_with")
    except Exception:  # a damaged cache entry is recomputed
        return None, None


def module_name(peft_name: str) -> str:
    return peft_name.removeprefix("base_model.model.")


def padded_batches(tokenizer, texts: Sequence[str], batch_size: int, device) -> Iterator[tuple[torch.Tensor, ...]]:
    """(input ids, attention mask) of each batch of prompts, right-padded (the mask marks the real tokens)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for i in range(0, len(texts), batch_size):
        rows = [encode_prompt(tokenizer, t) for t in texts[i: i + batch_size]]
        width = max(len(r) for r in rows)
        yield (torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device),
               torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device))


def shared_gram() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """x ↦ Σ x xᵀ over the unmasked rows (float32 products, float64 result), computed once for modules that read the
    same input tensor in a row (q/k/v, gate/up): a third fewer products per block."""
    last: list = [None, -1, None]  # the input tensor itself (held, so its memory cannot be reused), its version, G

    def gram(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # identity, not the data pointer: a freed input's memory is soon another tensor's, of the same shape and
        # version 0 — keyed by address, a later module got an earlier module's Gram (statistics that depended on the
        # allocator's history: two identical runs in one process differed by 6.6 in a Gram entry)
        if last[0] is not x or last[1] != x._version:
            rows = x.reshape(-1, x.shape[-1])[mask].float()
            last[0], last[1], last[2] = x, x._version, (rows.T @ rows).double()
        return last[2]

    return gram


@torch.no_grad()
def collect_grams(peft_model, tokenizer, adapter: str, texts: Sequence[str], batch_size: int = 8,
                  progress: Callable[[int], None] | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """({module: mean x xᵀ over the real tokens}, tokens) with adapter `adapter` active."""
    from peft.tuners.lora import LoraLayer

    peft_model.set_adapter(adapter)
    sums: dict[str, torch.Tensor] = {}
    mask_now: list[torch.Tensor] = []

    gram = shared_gram()

    def hook(name):
        def fn(module, args, kwargs):
            g = gram(args[0] if args else kwargs["x"], mask_now[0])
            sums[name] = g.clone() if name not in sums else sums[name].add_(g)
        return fn

    handles = [m.register_forward_pre_hook(hook(module_name(n)), with_kwargs=True)
               for n, m in peft_model.named_modules()
               if isinstance(m, LoraLayer) and adapter in m.lora_A and hasattr(m.get_base_layer(), "in_features")]
    tokens = 0
    try:
        for ids, mask in padded_batches(tokenizer, texts, batch_size, next(peft_model.parameters()).device):
            mask_now[:] = [mask.reshape(-1).bool()]
            peft_model(input_ids=ids, attention_mask=mask)
            tokens += int(mask.sum())
            if progress:
                progress(len(ids))
    finally:
        for h in handles:
            h.remove()
    return {k: (v / max(tokens, 1)).float().contiguous() for k, v in sums.items()}, tokens


def cached_base(path: Path) -> str | None:
    """The base a statistics file was collected on (None when it cannot be read)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {})["meta"])["base"]
    except Exception:  # a damaged cache entry is recomputed
        return None


def write_statistics(path: Path, grams: Mapping[str, torch.Tensor], meta: StatisticsMeta) -> Path:
    """Write atomically (temp file beside it, then rename)."""
    from safetensors.torch import save_file

    from tiesmerge.atomic import disk_error, replace_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (disk_error(exc, path) or exc) from None
    return replace_file(path, lambda tmp: save_file(dict(grams), str(tmp), metadata=meta.as_metadata()))


def calibrate(model, tokenizer, base: str, adapters: Mapping[str, Path], prompts: Mapping[str, Sequence[Prompt]],
              fmt: PromptFormat, *, root: Path | None = None, batch_size: int = 8,
              log: Callable[[str], None] = lambda m: None) -> dict[str, Path]:
    """Statistics of every adapter (cached: an adapter whose file exists is skipped); adapter name → file."""
    from tiesmerge.eval.models import attach_adapters

    out: dict[str, Path] = {}
    todo = {}
    setup = collection_setup(model)
    for name, path in adapters.items():
        out[name] = statistics_path(path, prompts[name], fmt, root)
        if out[name].is_file() and cached_setup(out[name]) == (base, setup):
            log(f"{name}: statistics cached ({out[name]})")
        else:
            if out[name].is_file():
                log(f"{name}: cached statistics were collected on another base, dtype or quantization: "
                    "collecting them again")
            todo[name] = path
    if not todo:
        return out
    peft_model = attach_adapters(model, todo)
    for name, path in todo.items():
        start = time.perf_counter()
        texts = [p.render(tokenizer, fmt) for p in prompts[name]]
        if (note := truncation_note(tokenizer, name, texts)) is not None:
            log(note)
        grams, tokens = collect_grams(peft_model, tokenizer, name, texts, batch_size)
        meta = StatisticsMeta(adapter_digest(path), base, prompts_digest(prompts[name], fmt), fmt.value,
                              len(texts), tokens, collected_with=setup)
        write_statistics(out[name], grams, meta)
        log(f"{name}: {len(grams)} modules, {tokens} tokens from {len(texts)} prompts "
            f"({time.perf_counter() - start:.1f} s) → {out[name]}")
    return out
