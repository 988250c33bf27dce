"""Refine's targets and guards (issue 33) on a tiny model: every target lowers the held-out divergence to each teacher
below the start's; a cached teacher output equals a fresh teacher pass (and its bucketed KL the full KL); per-teacher
normalisation equalises teachers whose start losses differ 100×; the keep term leaves a student that already equals
its teacher unchanged; when nothing beats the start, the start is returned; bf16 autocast agrees with float32; the
options target is each option teacher-forced (and never reads an answer: test_refine.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.helpers import run_cli
from tests.train.conftest import question_file
from tiesmerge.calibration.prompts import Prompt
from tiesmerge.train import refine as R
from tiesmerge.train import teacher as T


def prompts_of(tmp_path, n=16):
    files = {"a": question_file(tmp_path / "a.jsonl", "alpha", n, diverse=False),
             "b": question_file(tmp_path / "b.jsonl", "beta", n, diverse=False)}
    return {k: [Prompt(r["question"], tuple(r["choices"])) for r in map(json.loads, f.read_text().splitlines())]
            for k, f in files.items()}


def run_refine(steer_base, start, specialists, prompts, **settings):
    from tiesmerge.eval.models import load_base

    s = R.RefineSettings(**{"steps": 20, "batch_size": 8, "lr": 1e-2, "eval_every": 10, "patience": 5,
                            "heldout": 0.25, **settings})
    model, tok = load_base(str(steer_base), device="cpu")
    run = R.prepare(model, tok, start, specialists, prompts, s, lambda m: None)
    return run, R.train(run, s)


@pytest.mark.parametrize("target", ["greedy", "kl", "kl_all", "options"])
def test_every_target_lowers_the_heldout_divergence_to_each_teacher(steer_base, specialists, start, tmp_path, target):
    _, report = run_refine(steer_base, start, specialists, prompts_of(tmp_path), target=R.RefineTarget(target),
                           keep=False)
    for name in ("a", "b"):
        assert report["final"][name]["objective"] < report["start"][name]["objective"], name
    assert not report["returned_start"] and report["best_step"] > 0


def test_a_cached_teacher_output_equals_a_fresh_teacher_pass(steer_base, specialists, start, tmp_path):
    from peft import PeftModel

    from tiesmerge.eval.models import load_base

    prompts = prompts_of(tmp_path, 6)
    for every, target in ((False, R.RefineTarget.kl), (True, R.RefineTarget.kl_all)):
        run, _ = run_refine(steer_base, start, specialists, prompts, target=target, keep=False, steps=1)
        model, tok = load_base(str(steer_base), device="cpu")
        teacher = PeftModel.from_pretrained(model, str(specialists["a"])).eval()
        for (prompt, cont), cached in zip(run.examples["a"], run.targets["a"]):
            with torch.no_grad():  # a plain full forward pass, read at the matched positions by hand
                logp = torch.log_softmax(teacher(input_ids=torch.tensor([prompt + cont])).logits[0].float(), -1)
            first = 0 if every else len(prompt) - 1
            rows = logp[first: len(prompt) + len(cont) - 1]
            # the cached log-probabilities are the fresh pass's at the cached ids, and those ids are a top-k of it
            # (tokens whose log-probs tie within rounding may swap places at the k-th rank)
            torch.testing.assert_close(cached.logprobs, rows.gather(-1, cached.ids.long()), atol=2e-5, rtol=0)
            outside = rows.scatter(-1, cached.ids.long(), float("-inf")).max(-1).values
            assert (outside <= cached.logprobs.min(-1).values + 2e-5).all()
            assert torch.equal(cached.ids[:, 0].long(), rows.argmax(-1))
            # the bucketed KL of the student against the cached target equals the full-vocabulary KL when the
            # target keeps the whole vocabulary, and stays within 1e-3 of it at k = 64
            student = torch.randn_like(rows) * 3
            full = torch.nn.functional.kl_div(torch.log_softmax(student, -1), rows, log_target=True,
                                              reduction="none").sum(-1)
            whole = T.Target.from_logits(rows, "a", k=rows.shape[-1])
            torch.testing.assert_close(T.bucket_kl(student, whole.ids, whole.logprobs), full, atol=1e-4, rtol=1e-4)
            assert (T.bucket_kl(student, cached.ids, cached.logprobs) - full).abs().max() < 1e-3 + 1e-2 * full.max()
        assert set(run.peft_model.peft_config) == {R.STUDENT}


def test_one_pass_teacher_continues_as_generate_does(steer_base, specialists):
    """teach() decodes greedily itself (prompt logits from the prefill, the rest from cached decoding steps, prompts
    of different lengths left-padded in one batch): its continuations are HF generate's, prompt by prompt."""
    from peft import PeftModel

    from tiesmerge.calibration.prompts import encode_prompt
    from tiesmerge.eval.models import load_base

    model, tok = load_base(str(steer_base), device="cpu")
    teacher = PeftModel.from_pretrained(model, str(specialists["a"]), adapter_name="a").eval()
    texts = ["alpha", "alpha beta gamma delta epsilon", "beta", "gamma delta", "alpha alpha alpha alpha alpha alpha"]
    examples, targets = T.teach(teacher, tok, "a", texts, 5, True, batch_size=3)
    assert len(targets) == len(texts)
    for text, (prompt, cont), target in zip(texts, examples, targets):
        ids = encode_prompt(tok, text)
        assert prompt == ids
        with torch.no_grad():
            gen = teacher.generate(input_ids=torch.tensor([ids]), max_new_tokens=5, do_sample=False,
                                   pad_token_id=tok.pad_token_id or 0)[0, len(ids):].tolist()
        if tok.eos_token_id in gen:
            gen = gen[: gen.index(tok.eos_token_id) + 1]
        assert cont == gen
        assert target.ids.shape[0] == len(prompt) + len(cont) - 1  # every position after the first
        with torch.no_grad():  # and its targets are an unpadded full pass's, position by position
            logp = torch.log_softmax(teacher(input_ids=torch.tensor([prompt + cont])).logits[0, :-1].float(), -1)
        torch.testing.assert_close(target.logprobs, logp.gather(-1, target.ids.long()), atol=1e-4, rtol=1e-4)


def test_per_teacher_normalisation_equalises_teachers_100x_apart():
    w = R.teacher_weights({"a": 0.02, "b": 2.0}, normalize=True)
    assert w["a"] * 0.02 == pytest.approx(w["b"] * 2.0)  # each teacher starts at the same weighted loss
    assert sum(w.values()) / 2 == pytest.approx(1.0) and w["a"] == pytest.approx(100 * w["b"])
    assert R.teacher_weights({"a": 0.02, "b": 2.0}, normalize=False) == {"a": 1.0, "b": 1.0}
    floored = R.teacher_weights({"a": 0.0, "b": 2.0}, normalize=True)  # a teacher the start already matches
    assert floored["a"] == pytest.approx(1000 * floored["b"]) and all(v < float("inf") for v in floored.values())


def test_normalisation_in_a_run_gives_each_teacher_the_same_start_loss(steer_base, specialists, start, tmp_path):
    run, report = run_refine(steer_base, start, specialists, prompts_of(tmp_path), target=R.RefineTarget.kl,
                             keep=False, steps=1)
    weighted = [report["weights"][n] * report["start"][n]["objective"] for n in ("a", "b")]
    raw = [report["start"][n]["objective"] for n in ("a", "b")]
    assert raw[0] != pytest.approx(raw[1], rel=0.05)  # the two teachers do start apart …
    assert weighted[0] == pytest.approx(weighted[1], rel=1e-6)  # … and weigh the same


def test_keep_leaves_a_student_that_already_equals_its_teacher_unchanged(steer_base, specialists, tmp_path):
    """The start is specialist a itself: every prompt is one the start already does as its teacher, so with keep
    the loss and its gradient are 0 and nothing moves; without keep the greedy target still sharpens it."""
    prompts = {"a": prompts_of(tmp_path)["a"]}
    teacher_only = {"a": specialists["a"]}
    greedy = R.RefineTarget.greedy
    run, kept = run_refine(steer_base, specialists["a"], teacher_only, prompts, keep=True, steps=10, eval_every=5,
                           target=greedy)
    assert run.kept["a"] == len(prompts["a"])
    assert all(abs(h.get("train_loss", 0.0)) < 1e-6 for h in kept["history"]), kept["history"]
    assert kept["returned_start"] and kept["best_step"] == 0  # no gain: the start is what is kept
    _, moved = run_refine(steer_base, specialists["a"], teacher_only, prompts, keep=False, steps=10, eval_every=5,
                          target=greedy)
    assert max(h.get("train_loss", 0.0) for h in moved["history"]) > 1e-3


def test_no_gain_returns_the_start_byte_for_byte_and_says_so(steer_base, specialists, tmp_path):
    qa = question_file(tmp_path / "qa.jsonl", "alpha", 16, diverse=False)
    out = tmp_path / "refined"
    res = run_cli("refine", "--start", specialists["a"], "--base", steer_base, "--device", "cpu", "--adapter",
                  f"a={specialists['a']}", "--calibration", f"a={qa}", "--steps", "10", "--eval-every", "5",
                  "--lr", "1e-2", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "no gain over the start: the start is returned unchanged" in res.stdout
    report = json.loads((out / "refine_report.json").read_text())
    assert report["returned_start"] and report["best_step"] == 0
    got = load_file(out / "adapter_model.safetensors")
    want = load_file(specialists["a"] / "adapter_model.safetensors")
    cfg = json.loads((specialists["a"] / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
    for k, v in want.items():
        expect = v * scale if "lora_B" in k else v  # the start's scale folded into B: the same ΔW at scale 1
        torch.testing.assert_close(got[k], expect, rtol=1e-6, atol=1e-7)


def test_validation_questions_choose_the_state_and_never_leak_into_training(steer_base, specialists, start,
                                                                             tmp_path):
    prompts = prompts_of(tmp_path)
    from tiesmerge.eval.loaders import load_questions

    val = load_questions(question_file(tmp_path / "val.jsonl", "alpha", 8), "a").questions
    from tiesmerge.eval.models import load_base

    s = R.RefineSettings(steps=20, batch_size=8, lr=1e-2, eval_every=10, patience=5, heldout=0.25)
    model, tok = load_base(str(steer_base), device="cpu")
    run = R.prepare(model, tok, start, specialists, prompts, s, lambda m: None, validation=val)
    report = R.train(run, s)
    accuracies = [h["accuracy"] for h in report["history"]]
    assert all(a is not None for a in accuracies)
    assert report["history"][[h["step"] for h in report["history"]].index(report["best_step"])]["accuracy"] == \
        max(accuracies)  # the state kept is the best on validation (the earliest of equals)
    assert report["validation"]["start"] is not None


def test_bf16_autocast_agrees_with_float32(steer_base, specialists, start, tmp_path):
    prompts = prompts_of(tmp_path)
    runs = {}
    for flag in (False, True):
        run, report = run_refine(steer_base, start, specialists, prompts, target=R.RefineTarget.kl, keep=False,
                                 steps=10, eval_every=10, lr=1e-3, autocast=flag)
        runs[flag] = (run, R.student_state(run.peft_model), report)
    (run32, s32, r32), (_, s16, _) = runs[False], runs[True]
    # stated tolerance: after 10 steps every factor within 2 % (relative Frobenius) of the float32 run's, and the
    # bf16-trained student, scored in float32, within 10 % of the float32 student's held-out objective (this tiny
    # base's head is scaled ×40: its logits are large, so the objective is steep in the factors; measured 0.3 % with
    # today's transformers, 7 % with the lowest supported)
    for k in s32:
        assert float((s16[k] - s32[k]).norm() / s32[k].norm().clamp_min(1e-12)) < 0.02, k
    fp32 = R.RefineSettings(target=R.RefineTarget.kl, keep=False, heldout=0.25)
    R.load_student_state(run32.peft_model, s16)  # the bf16-trained student against the float32 targets
    for name in ("a", "b"):
        got = R.objective(run32, fp32, name)
        assert got == pytest.approx(r32["final"][name]["objective"], rel=0.10)


def test_cli_validation_flag_selects_and_refuses_the_test_split(steer_base, specialists, start, tmp_path):
    qa = question_file(tmp_path / "qa.jsonl", "alpha", 16, diverse=False)
    qb = question_file(tmp_path / "qb.jsonl", "beta", 16, diverse=False)
    va = question_file(tmp_path / "va.jsonl", "alpha-val", 6)
    common = ["refine", "--start", start, "--base", steer_base, "--device", "cpu", "--adapter", f"a={specialists['a']}",
              "--adapter", f"b={specialists['b']}", "--calibration", f"a={qa}", "--calibration", f"b={qb}",
              "--steps", "10", "--eval-every", "5", "--lr", "1e-2"]
    res = run_cli(*common, "--validation", f"a={va}", "-o", tmp_path / "r")
    assert res.exit_code == 0, res.stderr
    assert "validation accuracy: a " in res.stdout
    report = json.loads((tmp_path / "r" / "refine_report.json").read_text())
    assert set(report["validation"]["start"]) == {"a"} and report["settings"]["keep"] is True
    for value, words in (("a=builtin:math:test", "test split is kept for the final evaluation"),
                         (f"c={va}", "no adapter is named 'c'")):
        bad = run_cli(*common, "--validation", value, "-o", tmp_path / "bad")
        assert bad.exit_code == 2 and words in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_batched_losses_equal_each_example_computed_alone():
    """example_losses (one log-softmax over the batch) = each example's own loss: cross-entropy on the teacher's
    tokens for greedy teacher-sourced examples, the bucketed KL (written out here) for the rest."""
    torch.manual_seed(0)
    sizes, vocab, k = [3, 1, 4, 2], 50, 7
    logits = torch.randn(sum(sizes), vocab, requires_grad=True)
    tokens = torch.randint(0, vocab, (sum(sizes),))
    targets = [T.Target.from_logits(torch.randn(n, vocab) * 3, src, k)
               for n, src in zip(sizes, ["a", "start", "b", "start"])]

    def alone(rows, toks, target, ce):
        if ce:
            return torch.nn.functional.cross_entropy(rows, toks)
        logq = torch.log_softmax(rows, -1)
        q = logq.gather(-1, target.ids.long())
        p = target.logprobs.exp()
        rest_p, rest_q = 1 - p.sum(-1), 1 - q.exp().sum(-1)
        return ((p * (target.logprobs - q)).sum(-1) + rest_p * (rest_p.log() - rest_q.log())).mean()

    for greedy in (True, False):
        got = T.example_losses(logits, tokens, sizes, targets, greedy)
        want, at = [], 0
        for n, t in zip(sizes, targets):
            want.append(alone(logits[at: at + n], tokens[at: at + n], t, greedy and t.source != "start"))
            at += n
        torch.testing.assert_close(got, torch.stack(want), atol=1e-5, rtol=1e-5)
        g1, = torch.autograd.grad(got.sum(), logits)
        g2, = torch.autograd.grad(torch.stack(want).sum(), logits)
        torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-5)


def test_the_options_target_is_each_option_teacher_forced(steer_base, specialists, start, tmp_path):
    """--target options: four examples per question (` option` + newline after the cloze prompt, as the evaluator
    scores them), each target a fresh teacher pass's distribution at the option's tokens; a plain text falls back
    to its greedy continuation; a question's four options are held out together."""
    from peft import PeftModel

    from tiesmerge.calibration.prompts import PromptFormat, encode_prompt
    from tiesmerge.eval.cloze import answer_ids
    from tiesmerge.eval.models import load_base

    prompts = prompts_of(tmp_path, 8)
    prompts["a"] = prompts["a"][:7] + [Prompt("a plain text, no options", (), is_question=False)]
    run, _ = run_refine(steer_base, start, specialists, prompts, target=R.RefineTarget.options, steps=1)
    model, tok = load_base(str(steer_base), device="cpu")
    teacher = PeftModel.from_pretrained(model, str(specialists["a"]), adapter_name="a").eval()
    examples, targets = run.examples["a"], run.targets["a"]
    assert len(examples) == 7 * 4 + 1
    for q in range(7):
        prompt_ids = encode_prompt(tok, prompts["a"][q].render(tok, PromptFormat.cloze))
        for c, choice in enumerate(prompts["a"][q].choices):
            (p, cont), target = examples[4 * q + c], targets[4 * q + c]
            assert p == prompt_ids and cont == answer_ids(tok, choice)
            if target.source == "start":
                continue  # kept: the start already does what the teacher does there
            with torch.no_grad():
                logits = teacher(input_ids=torch.tensor([p + cont])).logits[0, len(p) - 1: -1]
            logp = torch.log_softmax(logits.float(), -1)
            torch.testing.assert_close(target.logprobs, logp.gather(-1, target.ids.long()), atol=1e-4, rtol=1e-4)
            assert target.ids.shape[0] == len(cont)
    assert len(examples[-1][1]) >= 1  # the plain text: its greedy continuation
    owner = [q for q in range(7) for _ in range(4)] + [7]
    held = {owner[j] for j in run.heldout["a"]}
    assert held and {j for j, o in enumerate(owner) if o in held} == set(run.heldout["a"])
    assert not held & {owner[j] for j in run.train["a"]}


def test_options_with_letters_prompts_is_refused_in_one_line():
    from tiesmerge.calibration.prompts import PromptFormat
    from tiesmerge.errors import BadInputError

    with pytest.raises(BadInputError, match="use --prompt-format cloze"):
        R.RefineSettings(target=R.RefineTarget.options, prompt_format=PromptFormat.letters).check()


def _scaled_copy(start, out, factor):
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(start, out)
    t = load_file(str(out / "adapter_model.safetensors"))
    save_file({k: v * factor if "lora_B" in k else v for k, v in t.items()}, str(out / "adapter_model.safetensors"))
    return out


def test_of_several_starts_the_one_closest_to_its_teachers_is_refined(steer_base, specialists, start, tmp_path):
    """Candidates are scored before training on the held-out prompts (the same objective a single-start run reports
    for its start); the lowest is refined, and a far-off merge is never chosen."""
    prompts = prompts_of(tmp_path)
    far = _scaled_copy(start, tmp_path / "far", 30.0)
    half = _scaled_copy(start, tmp_path / "half", 0.5)
    candidates = [far, start, half, specialists["a"]]
    run, report = run_refine(steer_base, candidates, specialists, prompts, steps=1)
    rows = run.start_choice
    assert [r["start"] for r in rows] == [str(c) for c in candidates]
    for c, row in zip(candidates, rows):  # each candidate's score = its own single-start run's start objective
        _, alone = run_refine(steer_base, c, specialists, prompts, steps=1, keep=False)
        for n in ("a", "b"):
            assert row["by_adapter"][n] == pytest.approx(alone["start"][n]["objective"], rel=1e-5)
    best = min(range(len(rows)), key=lambda i: rows[i]["objective"])
    assert run.start == candidates[best] and rows[best]["chosen"] and sum(r["chosen"] for r in rows) == 1
    assert best != 0 and rows[0]["objective"] > rows[best]["objective"]
    assert set(run.peft_model.peft_config) == {R.STUDENT}  # the candidates and the teachers are gone


def test_the_cli_takes_several_starts_and_says_which_it_refined(steer_base, specialists, start, tmp_path):
    qa, qb = question_file(tmp_path / "a.jsonl", "alpha", 16, diverse=False), \
        question_file(tmp_path / "b.jsonl", "beta", 16, diverse=False)
    far = _scaled_copy(start, tmp_path / "far", 30.0)
    args = ["refine", "--start", far, "--start", start, "--base", steer_base, "--device", "cpu",
            "--adapter", f"a={specialists['a']}", "--adapter", f"b={specialists['b']}", "--calibration", f"a={qa}",
            "--calibration", f"b={qb}", "--steps", "2", "--batch-size", "4", "--heldout", "0.25"]
    res = run_cli(*args, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    report = json.loads((tmp_path / "out" / "refine_report.json").read_text())
    assert report["start"] == str(start) and [r["chosen"] for r in report["start_choice"]] == [False, True]
    assert f"start candidate {start}: held-out divergence" in res.stdout and "(chosen)" in res.stdout
    res = run_cli(*args[:3], *args[1:], "-o", tmp_path / "twice")  # the same start given twice
    assert res.exit_code == 2 and "names the same merge twice" in res.stderr and not (tmp_path / "twice").exists()
