"""A tiny random Qwen2 model with the char-level chat tokenizer, in memory, for the agents' tests."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_qwen2_config, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(tiny_qwen2_config()).eval(), tiny_tokenizer()


class SlowForward:
    """Adds `delay` seconds to every forward pass of a model (a stand-in for a slow GPU)."""

    def __init__(self, model, delay: float):
        import time

        self.handle = model.model.layers[0].register_forward_hook(lambda *a: time.sleep(delay))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()
