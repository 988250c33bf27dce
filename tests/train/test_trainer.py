"""The specialist trainer: answer-only loss falls, the adapter is a normal PEFT adapter, runs are seeded."""

from __future__ import annotations

import json

import torch

from tests.cli.helpers import run_cli
from tests.conftest import peft_deltas
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.eval.models import load_base
from tiesmerge.eval.questions import make_question
from tiesmerge.eval.scoring import score_letters
from tiesmerge.train.trainer import TrainSettings, train_adapter

QS = [make_question(f"Item {i}: which letter?", ["w", "x", "y", "z"], "C", "toy") for i in range(12)]


def steerable_base(path):
    """The tiny random base with a larger LM head: at init scale (std 0.02, RMS-normed hidden of width 32)
    no hidden state can move a logit by more than ~0.6, so no adapter could make any token likely."""
    model, tok = load_base(str(path), device="cpu")
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model, tok


def test_training_learns_the_answer_and_saves_a_peft_adapter(tiny_base, tmp_path):
    model, tok = steerable_base(tiny_base)
    before = sum(p.predicted == "C" for p in score_letters(model, tok, QS))
    card = train_adapter(model, tok, QS, TrainSettings(steps=30, rank=4, alpha=8, lr=1e-2, batch_size=4,
                                                       warmup_steps=2), tmp_path / "ad")
    assert card["loss_last_10_mean"] < card["loss_first"] / 2
    reader = AdapterReader(tmp_path / "ad", "ad")
    assert len(reader.modules) == 14 and reader.settings.use_rslora and {m.rank for m in reader.modules.values()} == {4}
    fresh, tok2 = steerable_base(tiny_base)
    from tiesmerge.eval.models import attach_adapters

    trained = attach_adapters(fresh, {"ad": tmp_path / "ad"})
    after = sum(p.predicted == "C" for p in score_letters(trained, tok2, QS))
    assert after == len(QS) and after > before
    assert json.loads((tmp_path / "ad" / "training_card.json").read_text())["settings"]["rank"] == 4
    assert len(peft_deltas(tiny_base, tmp_path / "ad")) == 14


def test_cli_train_is_seeded(tiny_base, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(q.as_dict()) + "\n" for q in QS))
    args = ["adapters", "train", "--base", tiny_base, "--domain", "toy", "--data", data, "--steps", "3",
            "--rank", "2", "--device", "cpu"]
    assert run_cli(*args, "-o", tmp_path / "a").exit_code == 0
    assert run_cli(*args, "-o", tmp_path / "b").exit_code == 0
    a = AdapterReader(tmp_path / "a", "a")
    b = AdapterReader(tmp_path / "b", "b")
    name = next(iter(a.modules))
    assert torch.equal(a.delta(name), b.delta(name))
    res = run_cli("adapters", "train", "--base", tiny_base, "--domain", "poetry", "-o", tmp_path / "c")
    assert res.exit_code == 2 and "no built-in set" in res.stderr


def test_shared_prefix_loss_and_gradients_equal_full_prompts(tiny_base):
    from peft import LoraConfig, get_peft_model

    from tiesmerge.train.trainer import batch_loss, encode_examples, shared_prefix_length

    model, tok = load_base(str(tiny_base), device="cpu")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_rslora=True, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj", "down_proj"]))
    qs = [make_question(f"Item {i}{'x' * (i % 4)}: which letter?", ["w", "x", "y", "z"], "ABCD"[i % 4], "toy")
          for i in range(6)]
    examples = encode_examples(tok, qs)
    plen = shared_prefix_length(examples)
    assert plen > 10 and all(p[:plen] == examples[0][0][:plen] for p, _ in examples)
    from tiesmerge.train.trainer import _batch

    results = []
    ids, mask, labels = _batch(examples, tok.pad_token_id, "cpu")
    for run in ("hf", [], examples[0][0][:plen]):
        peft_model.zero_grad()
        if run == "hf":  # the reference: transformers' own loss, the head over every position
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            loss = batch_loss(peft_model, examples, tok.pad_token_id, run)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]))
    (hf, g_hf), (full, g_full), (shared, g_shared) = results
    torch.testing.assert_close(full, hf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    for a, b, c in zip(g_shared, g_full, g_hf):
        torch.testing.assert_close(b, c, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_text_target_learns_the_answer_text_for_cloze_scoring(tiny_base, tmp_path):
    from tiesmerge.eval.cloze import score_cloze

    qs = [make_question(f"Item {i}: name the last one", ["w", "x", "y", "z"], "D", "toy") for i in range(8)]
    model, tok = steerable_base(tiny_base)
    before = sum(p.correct for p in score_cloze(model, tok, qs))
    card = train_adapter(model, tok, qs, TrainSettings(steps=30, rank=4, alpha=8, lr=1e-2, batch_size=4,
                                                       warmup_steps=2, target="text"), tmp_path / "ad")
    assert card["loss_last_10_mean"] < card["loss_first"] / 2 and card["settings"]["target"] == "text"
    fresh, tok2 = steerable_base(tiny_base)
    from tiesmerge.eval.models import attach_adapters

    after = sum(p.correct for p in score_cloze(attach_adapters(fresh, {"ad": tmp_path / "ad"}), tok2, qs))
    assert after == len(qs) > before
