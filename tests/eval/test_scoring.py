"""Letter scoring: a forced letter wins, batching changes nothing, adapter switching equals loading alone."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tiesmerge.eval.models import attach_adapters, load_base, using
from tiesmerge.eval.questions import make_question
from tiesmerge.eval.scoring import letter_token_ids, parse_letter, score_generate, score_letters, wilson_interval

QUESTIONS = [
    make_question("What is 2 + 2?", ["3", "4", "5", "22"], "B", "math"),
    make_question("Capital of France?", ["Paris", "Rome", "Oslo", "Bern"], "A", "humanities"),
    make_question("Symbol of iron?", ["Ir", "In", "Fe", "I"], "C", "stem"),
    make_question("What does print(1//2) print? A long question to vary the padding length a lot",
                  ["0", "0.5", "1", "error"], "A", "code"),
    make_question("Pick D", ["w", "x", "y", "z"], "D", "math"),
]


@pytest.fixture()
def tiny(tiny_base):
    return load_base(str(tiny_base), device="cpu")


def test_forced_letter_is_predicted(tiny):
    model, tok = tiny
    c_id = letter_token_ids(tok)[2]
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[c_id] = 50.0
    model.lm_head = head
    preds = score_letters(model, tok, QUESTIONS, batch_size=2)
    assert [p.predicted for p in preds] == ["C"] * len(QUESTIONS)
    assert sum(p.correct for p in preds) == 1  # only the question whose gold is C
    assert all(p.logprobs[2] > -1e-3 for p in preds)  # p(C) ≈ 1


def test_batched_equals_unbatched(tiny):
    model, tok = tiny
    one = score_letters(model, tok, QUESTIONS, batch_size=1)
    many = score_letters(model, tok, QUESTIONS, batch_size=len(QUESTIONS))
    assert_close(torch.tensor([p.logprobs for p in many]), torch.tensor([p.logprobs for p in one]), atol=1e-4, rtol=1e-4)
    assert [p.predicted for p in many] == [p.predicted for p in one]


def test_switching_adapters_equals_loading_each_alone(tiny_base, adapter_set):
    names = ["rs8", "plain4"]
    model, tok = load_base(str(tiny_base), device="cpu")
    peft = attach_adapters(model, {n: adapter_set[n] for n in names})
    switched = {}
    for name in names + [None, names[0]]:
        with using(peft, model, name) as m:
            switched[name] = [p.logprobs for p in score_letters(m, tok, QUESTIONS, batch_size=3)]
    for name in names:
        fresh, tok2 = load_base(str(tiny_base), device="cpu")
        alone = attach_adapters(fresh, {name: adapter_set[name]})
        want = [p.logprobs for p in score_letters(alone, tok2, QUESTIONS, batch_size=3)]
        assert_close(torch.tensor(switched[name]), torch.tensor(want), atol=1e-5, rtol=1e-5)
    bare, tok3 = load_base(str(tiny_base), device="cpu")
    base_want = [p.logprobs for p in score_letters(bare, tok3, QUESTIONS, batch_size=3)]
    assert_close(torch.tensor(switched[None]), torch.tensor(base_want), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(torch.tensor(switched["rs8"]), torch.tensor(base_want), atol=1e-3)


def test_generate_mode_equals_one_question_at_a_time(tiny):
    """Batched (left-padded) greedy generation parses the same letters as generating each prompt alone, with a
    head that forces a letter so the parse is exercised on real output."""
    from tiesmerge.eval.scoring import build_prompt

    model, tok = tiny
    b_id = letter_token_ids(tok)[1]
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[b_id] = 50.0  # the generated token is B (a longer greedy run would repeat it: "BBB")
    model.lm_head = head
    preds = score_generate(model, tok, QUESTIONS, batch_size=2, max_new_tokens=1)
    want = []
    for q in QUESTIONS:
        ids = tok(build_prompt(tok, q), return_tensors="pt", add_special_tokens=False)["input_ids"]
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        want.append(parse_letter(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)))
    assert [p.predicted for p in preds] == want == ["B"] * len(QUESTIONS)


@pytest.mark.parametrize("text,want", [("B", "B"), ("(C) because", "C"), ("The answer is D.", "D"),
                                       ("A) Paris", "A"), ("none", None), ("", None), ("abc", None)])
def test_parse_letter(text, want):
    assert parse_letter(text) == want


def test_wilson_interval_hand_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.0713, abs=1e-4)


def _dequantized_copy(model4, path):
    """The fp32 model whose linears hold exactly the NF4 weights, dequantized: the reference for 4-bit logits."""
    import bitsandbytes as bnb

    ref, _ = load_base(str(path), device="cpu")
    for name, module in model4.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            assert not getattr(state, "packing_format_for_cpu", False)  # read before any forward repacks it
            ref.get_submodule(name).weight.data.copy_(bnb.functional.dequantize_4bit(module.weight.data, state))
    return ref


def test_4bit_nf4_base_scores_on_cpu(tiny_base_64):
    """64-wide layers: bitsandbytes' own CPU kernels (repacked where this CPU has AVX-512 BF16) run every linear;
    the letters' log-probs equal the dequantized fp32 model's (bf16 compute in the fused kernel: 2e-2)."""
    pytest.importorskip("bitsandbytes")
    model, tok = load_base(str(tiny_base_64), device="cpu", load_in_4bit=True)
    assert getattr(model, "is_loaded_in_4bit", False)
    ref = _dequantized_copy(model, tiny_base_64)
    preds = score_letters(model, tok, QUESTIONS, batch_size=2)
    want = score_letters(ref, tok, QUESTIONS, batch_size=2)
    assert len(preds) == len(QUESTIONS) and all(all(v <= 0 for v in p.logprobs) for p in preds)
    assert_close(torch.tensor([p.logprobs for p in preds]), torch.tensor([p.logprobs for p in want]),
                 atol=2e-2, rtol=0)


def test_4bit_base_with_32_wide_layers_scores_on_cpu(tiny_base):
    """Hidden size 32 cannot be repacked for the AVX-512-BF16 kernel (it needs multiples of 64): those linears keep
    the generic kernel, so the model scores — with exactly the dequantized weights' log-probs — instead of failing
    inside bitsandbytes."""
    pytest.importorskip("bitsandbytes")
    model, tok = load_base(str(tiny_base), device="cpu", load_in_4bit=True)
    ref = _dequantized_copy(model, tiny_base)
    preds = score_letters(model, tok, QUESTIONS, batch_size=2)
    want = score_letters(ref, tok, QUESTIONS, batch_size=2)
    assert_close(torch.tensor([p.logprobs for p in preds]), torch.tensor([p.logprobs for p in want]),
                 atol=1e-4, rtol=1e-4)


def test_4bit_misfit_without_a_switch_is_one_line(tiny_base, monkeypatch):
    """A bitsandbytes that repacks on this CPU but has no per-layer switch: one line naming the layer, the cause and
    the fix — never a traceback from inside bitsandbytes."""
    bnb = pytest.importorskip("bitsandbytes")
    from tiesmerge.errors import BadInputError
    from tiesmerge.eval import quant
    from tiesmerge.portable import quant as portable_quant

    model, _ = load_base(str(tiny_base), device="cpu", load_in_4bit=False)
    layer = bnb.nn.Linear4bit(32, 48, bias=False, quant_type="nf4")
    if hasattr(layer, "support_avx512bf16_for_cpu"):  # bitsandbytes ≥ 0.48
        del layer.support_avx512bf16_for_cpu
    model.model.layers[0].mlp.gate_proj = layer
    monkeypatch.setattr(portable_quant, "repacks_on_this_cpu", lambda _bnb: True)  # where fit_cpu_kernels looks
    with pytest.raises(BadInputError) as err:
        quant.fit_cpu_kernels(model)
    msg = str(err.value)
    assert "\n" not in msg and "model.layers.0.mlp.gate_proj" in msg
    assert "input size 32 is not a multiple of 64" in msg and "without --load-in-4bit" in msg


def test_repack_misfit_rule():
    bnb = pytest.importorskip("bitsandbytes")
    from tiesmerge.eval.quant import repack_misfit

    assert repack_misfit(bnb.nn.Linear4bit(64, 32, quant_type="nf4")) is None
    assert repack_misfit(bnb.nn.Linear4bit(128, 96, quant_type="nf4")) is None
    assert "input size 96" in repack_misfit(bnb.nn.Linear4bit(96, 64, quant_type="nf4"))
    assert "output size 48" in repack_misfit(bnb.nn.Linear4bit(64, 48, quant_type="nf4"))


def test_prefix_cache_equals_full_prompts(tiny, tiny_base, adapter_set):
    model, tok = tiny
    cached = score_letters(model, tok, QUESTIONS, batch_size=2, reuse_prefix=True)
    full = score_letters(model, tok, QUESTIONS, batch_size=1, reuse_prefix=False)
    assert_close(torch.tensor([p.logprobs for p in cached]), torch.tensor([p.logprobs for p in full]), atol=1e-4, rtol=1e-4)
    peft = attach_adapters(model, {"rs8": adapter_set["rs8"]})  # the prefix cache must follow the adapter
    with using(peft, model, "rs8") as m:
        a = score_letters(m, tok, QUESTIONS, batch_size=3, reuse_prefix=True)
        b = score_letters(m, tok, QUESTIONS, batch_size=3, reuse_prefix=False)
    assert_close(torch.tensor([p.logprobs for p in a]), torch.tensor([p.logprobs for p in b]), atol=1e-4, rtol=1e-4)


def test_fused_adapter_scores_as_the_unfused_one_and_restores_the_base(tiny_base, adapter_set):
    from tiesmerge.eval.models import fused

    model, tok = load_base(str(tiny_base), device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peft = attach_adapters(model, {n: adapter_set[n] for n in ("rs8", "pattern")})
    for name in ("rs8", "pattern"):
        with using(peft, model, name) as m:
            plain = score_letters(m, tok, QUESTIONS, batch_size=2)
        with fused(peft, name) as m:
            merged = score_letters(m, tok, QUESTIONS, batch_size=2)
        assert [p.predicted for p in merged] == [p.predicted for p in plain]
        assert_close(torch.tensor([p.logprobs for p in merged]), torch.tensor([p.logprobs for p in plain]),
                     atol=1e-4, rtol=0)
    with using(peft, model, None) as m:
        bare = score_letters(m, tok, QUESTIONS, batch_size=2)
    fresh, _ = load_base(str(tiny_base), device="cpu")
    assert_close(torch.tensor([p.logprobs for p in bare]),
                 torch.tensor([p.logprobs for p in score_letters(fresh, tok, QUESTIONS, batch_size=2)]), atol=1e-5, rtol=0)
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in peft.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(after[k], v) for k, v in before.items())  # bit for bit
