"""Refine's padding-free batches: packed rows give every example exactly its own unpadded forward pass."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_qwen2_config
from tiesmerge.train import packing as P
from tiesmerge.train import teacher as T


def _models():
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2ForCausalLM

    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(tiny_qwen2_config()).eval()
    c = tiny_qwen2_config()
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=c.vocab_size, hidden_size=32, intermediate_size=48,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128)).eval()
    return {"qwen2": qwen, "llama": llama}


EXAMPLES = [([5, 9, 11], [3, 4]), ([7] * 9, [2]), ([8, 1], [6, 6, 6]), ([4, 4, 4, 4, 4, 12], [9, 10]),
            ([13], [14, 15])]


@pytest.mark.parametrize("lengths,width", [([5, 3, 4, 9, 1], 8), ([2, 2, 2], 100), ([30] * 16, 256),
                                           ([50, 1, 1], 10), ([7, 41, 20, 33, 12, 28, 9], 64)])
def test_rows_keep_the_order_and_are_about_equal(lengths, width):
    rows = P.rows_of(lengths, width)
    assert [i for r in rows for i in r] == list(range(len(lengths)))  # every example once, in order
    assert all(rows)
    total = sum(lengths)
    assert len(rows) <= min(len(lengths), -(-total // width))
    share = total / len(rows)
    assert all(sum(lengths[i] for i in r) <= share + max(lengths) for r in rows)
    assert P.rows_of([30] * 16, 256) == [list(range(8)), list(range(8, 16))]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("every", [True, False])
@pytest.mark.parametrize("width", [8, 64])  # several rows (with pad at row ends), and all in one row
def test_packed_logits_equal_each_example_alone(arch, every, width):
    model = _models()[arch]
    kwargs, matched, tokens = P.packed_batch(EXAMPLES, 0, "cpu", every, width)
    with torch.no_grad():
        packed = model(**kwargs).logits[matched]
        want, want_tokens = [], []
        for prompt, cont in EXAMPLES:
            seq = prompt + cont
            logits = model(input_ids=torch.tensor([seq])).logits[0]
            first = 0 if every else len(prompt) - 1
            want.append(logits[first: len(seq) - 1])
            want_tokens += seq[first + 1:]
    assert tokens.tolist() == want_tokens
    assert packed.shape[0] == sum(T.sizes_of(EXAMPLES, every))  # the layout sizes_of / losses assume
    torch.testing.assert_close(packed, torch.cat(want), atol=1e-5, rtol=1e-5)
