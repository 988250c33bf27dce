"""Cloze scoring equals a one-sequence-at-a-time computation of each choice's mean token log-likelihood."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from tests.eval.test_scoring import QUESTIONS
from tiesmerge.eval.cloze import answer_ids, cloze_prompt, score_cloze
from tiesmerge.eval.models import attach_adapters, load_base, using


def reference(model, tok, q) -> list[float]:
    prompt = tok(cloze_prompt(tok, q), add_special_tokens=False)["input_ids"]
    out = []
    for choice in q.choices:
        cont = answer_ids(tok, choice)
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        out.append(sum(float(logp[len(prompt) + k - 1, t]) for k, t in enumerate(cont)) / len(cont))
    return out


def test_cloze_matches_reference_batched_and_with_an_adapter(tiny_base, adapter_set):
    model, tok = load_base(str(tiny_base), device="cpu")
    peft = attach_adapters(model, {"rs8": adapter_set["rs8"]})
    for name in (None, "rs8"):
        with using(peft, model, name) as m:
            want = torch.tensor([reference(m, tok, q) for q in QUESTIONS], dtype=torch.float64)
            for bs, chunks in ((1, 1), (3, 1), (3, 2), (4, 3)):
                got = score_cloze(m, tok, QUESTIONS, batch_size=bs, choice_chunks=chunks)
                assert_close(torch.tensor([p.logprobs for p in got], dtype=torch.float64), want, atol=2e-5, rtol=0)
                assert [p.predicted for p in got] == ["ABCD"[int(r.argmax())] for r in want]
                assert [p.question_id for p in got] == [q.id for q in QUESTIONS]


def test_cloze_picks_the_choice_a_biased_head_prefers(tiny_base):
    model, tok = load_base(str(tiny_base), device="cpu")
    target = tok("z", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        model.lm_head.weight[target].mul_(0).add_(model.model.norm.weight * 0 + 0)
        head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[target] = 30.0
    model.lm_head = head
    preds = score_cloze(model, tok, QUESTIONS, batch_size=2)
    assert preds[-1].predicted == "D"  # "Pick D": choices w, x, y, z — only "z" is likely


def test_models_with_capped_or_scaled_logits_take_the_full_model_path(tiny_base):
    """Logit soft-capping or scaling (Gemma 2, Cohere) makes head(decoder(x)) ≠ logits: cloze scoring and the
    trainer's answer loss must then run the whole model. (The tiny Llama ignores the flag, so the numbers
    must still equal the reference through that path.)"""
    from tiesmerge.eval.scoring import plain_lm_head

    model, tok = load_base(str(tiny_base), device="cpu")
    assert plain_lm_head(model)
    model.config.final_logit_softcapping = 30.0
    assert not plain_lm_head(model)
    want = torch.tensor([reference(model, tok, q) for q in QUESTIONS], dtype=torch.float64)
    got = score_cloze(model, tok, QUESTIONS, batch_size=3)
    assert_close(torch.tensor([p.logprobs for p in got], dtype=torch.float64), want, atol=2e-5, rtol=0)
