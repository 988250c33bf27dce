"""Seeded fixtures: a tiny random Qwen2 base and PEFT-made LoRA / RSLoRA adapters on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# `make test-min`: a venv with the core install only (no transformers / peft / mergekit). Test modules that are not
# marked `pytestmark = pytest.mark.core` need the extras and are not even collected there.
CORE_ONLY = os.environ.get("TIESMERGE_CORE_ONLY") == "1"


def pytest_ignore_collect(collection_path, config):
    if CORE_ONLY and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return "pytestmark = pytest.mark.core" not in collection_path.read_text()
    return None


PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_qwen2_config(hidden: int = 32, intermediate: int = 48):
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False,
    )


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A character-level tokenizer (every printable ASCII character is one token) with a chat template."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<|im_start|>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Qwen2 causal LM with a char-level tokenizer, saved to disk (the adapters' base)."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_qwen2")
    Qwen2ForCausalLM(tiny_qwen2_config()).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_base_64(tmp_path_factory) -> Path:
    """The tiny Qwen2 with every linear a multiple of 64 wide (hidden 64, MLP 128; k/v out 32): what 4-bit tests
    quantize, since bitsandbytes' AVX-512-BF16 CPU kernel repacks only such layers."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_qwen2_64")
    Qwen2ForCausalLM(tiny_qwen2_config(hidden=64, intermediate=128)).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def load_base(path: Path, dtype=torch.float32):
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(path, dtype=dtype)
    return model.eval()


def make_peft_adapter(base: Path, out: Path, *, seed: int, r: int = 8, alpha: float = 16, rslora: bool = True,
                      targets=tuple(PROJ), **extra) -> Path:
    """A real PEFT adapter with random (non-zero) A and B, saved with save_pretrained."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = load_base(base)
    cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=list(targets),
                     init_lora_weights=False, task_type="CAUSAL_LM", **extra)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # give B a non-trivial scale so the deltas matter in the logits
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(3.0)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapter_set(tiny_base, tmp_path_factory) -> dict[str, Path]:
    """Four PEFT adapters with different r and α, RSLoRA and plain LoRA mixed, one with patterns."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "rs8": make_peft_adapter(tiny_base, root / "rs8", seed=1, r=8, alpha=16, rslora=True),
        "plain4": make_peft_adapter(tiny_base, root / "plain4", seed=2, r=4, alpha=8, rslora=False),
        "rs16": make_peft_adapter(tiny_base, root / "rs16", seed=3, r=16, alpha=8, rslora=True),
        "pattern": make_peft_adapter(
            tiny_base, root / "pattern", seed=4, r=6, alpha=12, rslora=False,
            rank_pattern={"q_proj": 2, "model.layers.1.mlp.down_proj": 3},
            alpha_pattern={"v_proj": 5, "model.layers.0.mlp.up_proj": 20},
        ),
    }


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2))


def peft_deltas(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """Effective ΔW = scaling · B · A of every LoRA module, read from a PeftModel that PEFT loaded.

    This is the independent reference: it uses PEFT's own loader and scaling, not tiesmerge's reader.
    """
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base(base), adapter)
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a = module.lora_A["default"].weight.detach()
            b = module.lora_B["default"].weight.detach()
            key = name.removeprefix("base_model.model.")
            out[key] = module.scaling["default"] * (b @ a)
    return out


def peft_logits(base: Path, adapter: Path, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of base + adapter through PEFT, computed in float64 so that fp32 forward-pass rounding
    (~1e-5 on these logits) does not hide or fake a difference between two adapters."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base(base, torch.float64), adapter).eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def regmean_reference(deltas, grams, weights=None, off_diagonal: float = 1.0, floor: float = 1e-6) -> torch.Tensor:
    """RegMean as documented (merge/methods/regmean.py), written out densely in float64 with an explicit inverse:
    ΔW* = (Σ w_t ΔW_t (G̃_t + εI)) (Σ w_t (G̃_t + εI))⁻¹, G̃ = a·G + (1−a)·diag(G) of the symmetrised Gram,
    ε = floor · ‖Σ w_t G̃_t‖_F / Σ w_t."""
    weights = weights or [1.0] * len(deltas)
    gs = []
    for g in grams:
        g = g.double()
        g = (g + g.T) / 2
        gs.append(off_diagonal * g + (1 - off_diagonal) * torch.diag(torch.diag(g)))
    total = sum(w * g for w, g in zip(weights, gs))
    eps = floor * float(torch.linalg.matrix_norm(total)) / sum(weights)
    eye = torch.eye(total.shape[0], dtype=torch.float64)
    num = sum(w * d.double() @ (g + eps * eye) for w, d, g in zip(weights, deltas, gs))
    return num @ torch.linalg.inv(total + sum(weights) * eps * eye)
