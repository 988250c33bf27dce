"""A steerable tiny base (its LM head scaled so adapters can move the next token) and two specialists on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import make_peft_adapter, tiny_qwen2_config, tiny_tokenizer


@pytest.fixture(scope="session")
def steer_base(tmp_path_factory) -> Path:
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_qwen2_config())
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # at init scale no hidden state could make any token likely
    path = tmp_path_factory.mktemp("steer_base")
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def specialists(steer_base, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("specialists")
    return {"a": make_peft_adapter(steer_base, root / "a", seed=1, r=4, alpha=8, rslora=True),
            "b": make_peft_adapter(steer_base, root / "b", seed=2, r=2, alpha=2, rslora=False)}


@pytest.fixture(scope="session")
def start(specialists, tmp_path_factory) -> Path:
    """A TIES merge of the two specialists (rank 6): refine's start."""
    from tests.cli.helpers import run_cli

    out = tmp_path_factory.mktemp("start") / "ties"
    res = run_cli("merge", "--adapter", f"a={specialists['a']}:0.5", "--adapter", f"b={specialists['b']}:0.5",
                  "--density", "0.5", "--rank", "6", "-o", out)
    assert res.exit_code == 0, res.stderr
    return out


def question_file(path: Path, stem: str, n: int, answer=lambda i: "ABCD"[i % 4], diverse: bool = True) -> Path:
    """n questions: diverse — texts with many distinct characters (the layer inputs span their space); else one
    template with a number (a specialist then behaves alike on all of them, so held-out prompts are learnable)."""
    import random

    rng = random.Random(stem)
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    text = (lambda i: f"{stem} {''.join(rng.choice(chars) for _ in range(24))} is what?") if diverse else \
        (lambda i: f"{stem} number {i} is")
    rows = [{"question": text(i),
             "choices": ["red", "green", "blue", "gold"],
             "answer": answer(i), "domain": stem} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
