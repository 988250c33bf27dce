"""Reading a model folder saved by transformers 5 with transformers 4.x (the tournament image has 4.46).

Two things differ in what 5.x writes: the tokenizer config names the class `TokenizersBackend` (unknown to 4.x)
and keeps the chat template in `chat_template.jinja`; the model config holds the RoPE settings in
`rope_parameters`, where 4.x reads `rope_theta` / `rope_scaling` — and silently falls back to its default theta
(wrong for, e.g., SmolLM2's 100000) when they are missing. Folders written by 4.x, and any folder under 5.x,
load as usual."""

from __future__ import annotations

import json
from pathlib import Path


def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def config_overrides(folder: str) -> dict:
    """`from_pretrained` keyword arguments that restore 5.x RoPE settings for 4.x (empty when not needed)."""
    path = Path(folder) / "config.json"
    if transformers_major() >= 5 or not path.is_file():
        return {}
    cfg = _read_json(path)
    rope = cfg.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" in cfg:
        return {}
    out = {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    kind = rope.get("rope_type", "default")
    if kind != "default":
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return out


def _token(value):
    return value.get("content") if isinstance(value, dict) else value


def load_tokenizer(folder: str):
    """AutoTokenizer, or — for a 5.x-saved folder under 4.x — the fast tokenizer built from tokenizer.json with
    the special tokens and chat template 5.x wrote."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    base = Path(folder)
    cfg = _read_json(base / "tokenizer_config.json")
    if transformers_major() >= 5 or cfg.get("tokenizer_class") != "TokenizersBackend" \
            or not (base / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    specials = {k: _token(cfg[k]) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if cfg.get(k)}
    tok = PreTrainedTokenizerFast(tokenizer_file=str(base / "tokenizer.json"), **specials)
    template = cfg.get("chat_template")
    if template is None and (base / "chat_template.jinja").is_file():
        template = (base / "chat_template.jinja").read_text(encoding="utf-8")
    if template is None:
        template = _read_json(base / "chat_template.json").get("chat_template")
    if template:
        tok.chat_template = template
    return tok
