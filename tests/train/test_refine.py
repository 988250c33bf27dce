"""Refine on a tiny model: the student follows each teacher more closely on held-out prompts than the start did,
the output is a plain PEFT LoRA with scale 1 whose held-out agreement is the one reported, an interrupted run
resumes to exactly the uninterrupted result, and the gold answers are never read."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.helpers import run_cli
from tests.train.conftest import question_file
from tiesmerge.calibration.prompts import Prompt, PromptFormat
from tiesmerge.train import refine as R


def refine_args(steer_base, specialists, start, qa, qb, out, *extra):
    return ["refine", "--start", start, "--base", steer_base, "--device", "cpu", "--adapter", f"a={specialists['a']}",
            "--adapter", f"b={specialists['b']}", "--calibration", f"a={qa}", "--calibration", f"b={qb}",
            "--steps", "40", "--batch-size", "8", "--lr", "1e-2", "--eval-every", "10", "--heldout", "0.25",
            "--patience", "5", "-o", out, *extra]


def test_refine_raises_agreement_and_writes_a_plain_scale_one_lora(steer_base, specialists, start, tmp_path):
    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 24, diverse=False), question_file(tmp_path / "b.jsonl", "beta", 24, diverse=False)
    out = tmp_path / "refined"
    res = run_cli(*refine_args(steer_base, specialists, start, qa, qb, out, "--target", "greedy"))
    assert res.exit_code == 0, res.stderr
    report = json.loads((out / "refine_report.json").read_text())
    for name in ("a", "b"):
        before, after = report["start_agreement"][name], report["final"][name]
        assert after["loss"] < before["loss"] and after["token_agreement"] > before["token_agreement"], name
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"] == 6 and not config["use_rslora"]
    # loads in PEFT with scale 1, and its held-out agreement is the reported one
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from tiesmerge.eval.models import load_base

    model, tok = load_base(str(steer_base), device="cpu")
    peft_model = PeftModel.from_pretrained(model, str(specialists["a"]), adapter_name="a")
    peft_model.load_adapter(str(specialists["b"]), adapter_name="b")
    peft_model.load_adapter(str(out), adapter_name=R.STUDENT)
    assert {float(m.scaling[R.STUDENT]) for m in peft_model.modules() if isinstance(m, LoraLayer)} == {1.0}
    prompts = {n: [Prompt(json.loads(line)["question"], ("red", "green", "blue", "gold"))
                   for line in q.read_text().splitlines()] for n, q in (("a", qa), ("b", qb))}
    s = R.RefineSettings(heldout=0.25)
    for name in ("a", "b"):
        texts = [p.render(tok, PromptFormat.cloze) for p in prompts[name]]
        examples = R.teacher_continuations(peft_model, tok, name, texts, s.tokens)
        _, held = R.split_heldout(len(texts), s.heldout, s.seed, name)
        got = R.agreement(peft_model, [examples[i] for i in held], tok.pad_token_id)
        assert got["token_agreement"] == pytest.approx(report["final"][name]["token_agreement"], abs=1e-9)
        assert got["loss"] == pytest.approx(report["final"][name]["loss"], rel=1e-4)


def test_a_resumed_run_equals_an_uninterrupted_one(steer_base, specialists, start, tmp_path, monkeypatch):
    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 24, diverse=False), question_file(tmp_path / "b.jsonl", "beta", 24, diverse=False)
    whole = tmp_path / "whole"
    assert run_cli(*refine_args(steer_base, specialists, start, qa, qb, whole)).exit_code == 0
    cut = tmp_path / "cut"
    real_train = R.train

    def interrupted(run, settings, checkpoint=None, progress=None, log=lambda m: None):
        def stop(done, total, note):
            if done == 15:  # after the checkpoint at step 10
                raise KeyboardInterrupt
        return real_train(run, settings, checkpoint, stop, log)

    monkeypatch.setattr(R, "train", interrupted)
    res = run_cli(*refine_args(steer_base, specialists, start, qa, qb, cut))
    assert res.exit_code == 130 and not cut.exists()
    assert (tmp_path / ".cut.refine-checkpoint" / "checkpoint.safetensors").is_file()
    monkeypatch.setattr(R, "train", real_train)
    res = run_cli(*refine_args(steer_base, specialists, start, qa, qb, cut))
    assert res.exit_code == 0 and "resumed from step 10" in res.stderr
    a, b = load_file(str(whole / "adapter_model.safetensors")), load_file(str(cut / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert not (tmp_path / ".cut.refine-checkpoint").exists()  # removed once the output is in place


@pytest.mark.parametrize("target", [[], ["--target", "options"]])  # the default, and the target that reads options
def test_gold_answers_are_never_read(steer_base, specialists, start, tmp_path, target):
    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 16, diverse=False), question_file(tmp_path / "b.jsonl", "beta", 16, diverse=False)
    pa = question_file(tmp_path / "pa.jsonl", "alpha", 16, answer=lambda i: "not a letter", diverse=False)
    pb = question_file(tmp_path / "pb.jsonl", "beta", 16, answer=lambda i: ["poison"], diverse=False)
    outs = []
    for name, files in (("clean", (qa, qb)), ("poisoned", (pa, pb))):
        out = tmp_path / name
        res = run_cli(*refine_args(steer_base, specialists, start, *files, out, "--steps", "10", *target))
        assert res.exit_code == 0, res.stderr
        outs.append(load_file(str(out / "adapter_model.safetensors")))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no prompts"),
    ("missing", "have no calibration prompts"),
    ("leak", "contain 16 question(s) of --test"),
    ("unknown", "which is not an adapter of the merge"),
])
def test_bad_calibration_is_one_line_before_loading(specialists, start, tmp_path, case, message):
    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 16, diverse=False), question_file(tmp_path / "b.jsonl", "beta", 16, diverse=False)
    (tmp_path / "empty.jsonl").write_text("\n")
    cal = {"empty": [f"a={tmp_path / 'empty.jsonl'}", f"b={qb}"], "missing": [f"a={qa}"],
           "leak": [f"a={qa}", f"b={qb}"], "unknown": [f"a={qa}", f"b={qb}", f"c={qb}"]}[case]
    args = ["refine", "--start", start, "--base", tmp_path / "no-such-base", "--adapter", f"a={specialists['a']}",
            "--adapter", f"b={specialists['b']}", "-o", tmp_path / "out"]
    for c in cal:
        args += ["--calibration", c]
    if case == "leak":
        args += ["--test", qa]
    res = run_cli(*args)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_kl_target_moves_the_student_toward_the_teachers(steer_base, specialists, start, tmp_path):
    from tiesmerge.eval.models import load_base

    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 16, diverse=False), question_file(
        tmp_path / "b.jsonl", "beta", 16, diverse=False)
    prompts = {n: [Prompt(json.loads(line)["question"]) for line in q.read_text().splitlines()]
               for n, q in (("a", qa), ("b", qb))}
    settings = R.RefineSettings(steps=20, batch_size=8, lr=1e-2, eval_every=10, patience=5, heldout=0.25,
                                target=R.RefineTarget.kl)
    model, tok = load_base(str(steer_base), device="cpu")
    run = R.prepare(model, tok, start, specialists, prompts, settings, lambda m: None)
    assert set(run.peft_model.peft_config) == {R.STUDENT}  # the teachers' outputs are cached: they never run again
    assert all(t.ids.shape[1] == 64 for t in run.targets["a"])
    report = R.train(run, settings)
    for name in ("a", "b"):
        assert report["final"][name]["loss"] < report["start"][name]["loss"]


def test_an_adapter_that_does_not_fit_the_base_is_one_line(steer_base, specialists, start, tmp_path, tiny_base_64):
    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 8, diverse=False), question_file(
        tmp_path / "b.jsonl", "beta", 8, diverse=False)
    res = run_cli(*refine_args(tiny_base_64, specialists, start, qa, qb, tmp_path / "out"))
    assert res.exit_code == 2 and "does not fit this base model" in res.stderr, res.stderr
    assert [ln for ln in res.stderr.splitlines() if "error" in ln.lower()] == [res.stderr.strip().splitlines()[-1]]
    assert "size mismatch" in res.stderr and not (tmp_path / "out").exists()
    inside = run_cli(*refine_args(steer_base, specialists, start, qa, qb, specialists["a"] / "refined"))
    assert inside.exit_code == 2 and "overlaps input adapter" in inside.stderr
