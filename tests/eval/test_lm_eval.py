"""lm-evaluation-harness as an independent judge: the tasks `tiesmerge data export-lm-eval` writes, run by lm-eval
0.4.x's HF backend with `peft=` on a tiny base and a merged adapter, give per question the log-likelihoods,
choices and accuracies that `tiesmerge eval --mode cloze --cloze-norm sum / chars / bytes` computes."""

from __future__ import annotations

import json

import pytest
import torch

from tiesmerge.eval.cloze import ClozeNorm, score_cloze
from tiesmerge.eval.questions import make_question

QUESTIONS = [
    make_question("What is 2 + 2?", ["4", "5", "22", "four hundred"], "A", "math"),
    make_question("Which planet is largest?", ["Mars", "Jupiter", "Venus", "Earth"], "B", "stem"),
    make_question("Capital of France?", ["Rome", "Oslo", "Paris", "Bern"], "C", "humanities"),
    make_question("What does len('abc') return?", ["2", "3", "abc", "None"], "B", "code"),
    make_question("What is 10% of 50?", ["5", "0.5", "50", "500"], "A", "math"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tests.cli.helpers import run_cli

    data = tmp_path_factory.mktemp("lme_data") / "q.jsonl"
    data.write_text("".join(json.dumps(q.as_dict()) + "\n" for q in QUESTIONS))
    out = tmp_path_factory.mktemp("lme") / "tasks"
    res = run_cli("data", "export-lm-eval", out, "--data", data, "--name", "tm")
    assert res.exit_code == 0, res.stderr
    assert "--include_path" in res.stdout
    return out


def test_export_writes_one_task_per_domain_and_a_group(exported):
    import yaml

    names = sorted(p.stem for p in exported.glob("*.yaml"))
    assert names == ["tm", "tm_code", "tm_humanities", "tm_math", "tm_stem"]
    task = yaml.safe_load((exported / "tm_math.yaml").read_text())
    assert task["output_type"] == "multiple_choice" and task["doc_to_text"] == "Question: {{question}}\nAnswer:"
    rows = [json.loads(line) for line in (exported / "tm_math.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == [0, 0] and rows[0]["choices"] == ["4", "5", "22", "four hundred"]
    assert yaml.safe_load((exported / "tm.yaml").read_text())["task"] == names[1:]


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    """A tiny Qwen2 whose vocabulary is exactly the tokenizer's (lm-eval resizes the embeddings to the tokenizer's
    length otherwise, which changes every log-softmax), and a TIES merge of two RSLoRA adapters on it."""
    from transformers import Qwen2ForCausalLM

    from tests.conftest import make_peft_adapter, tiny_qwen2_config, tiny_tokenizer

    root = tmp_path_factory.mktemp("lme_model")
    tok = tiny_tokenizer()
    cfg = tiny_qwen2_config()
    cfg.vocab_size, cfg.max_position_embeddings = len(tok), 256
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    from tests.cli.helpers import run_cli

    a = make_peft_adapter(root / "base", root / "a", seed=3, r=8, alpha=16, rslora=True)
    b = make_peft_adapter(root / "base", root / "b", seed=4, r=4, alpha=8, rslora=False)
    res = run_cli("merge", "--adapter", f"a={a}", "--adapter", f"b={b}", "--density", "0.5", "--device", "cpu",
                  "-o", root / "merged")
    assert res.exit_code == 0, res.stderr
    return root / "base", root / "merged"


def test_lm_eval_agrees_with_tiesmerge_cloze(exported, base_and_adapter, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    from tiesmerge.eval.models import attach_adapters, load_base

    base, adapter = base_and_adapter
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={base},peft={adapter},dtype=float32", device="cpu", batch_size=2,
        tasks=["tm"], task_manager=TaskManager(include_path=str(exported)), log_samples=True)
    theirs = {}
    for samples in out["samples"].values():
        for s in samples:
            theirs[s["doc"]["id"]] = [float(r[0][0]) for r in s["resps"]]  # summed log-likelihood per choice
    assert len(theirs) == len(QUESTIONS)

    model, tok = load_base(str(base), device="cpu", dtype="float32")
    peft = attach_adapters(model, {"m": adapter})
    ours = {norm: score_cloze(peft, tok, QUESTIONS, batch_size=2, norm=norm)
            for norm in (ClozeNorm.sum, ClozeNorm.chars)}
    for pred, q in zip(ours[ClozeNorm.sum], QUESTIONS):
        torch.testing.assert_close(torch.tensor(pred.logprobs), torch.tensor(theirs[q.id]), atol=2e-4, rtol=1e-5)
    for norm, metric in ((ClozeNorm.sum, "acc,none"), (ClozeNorm.chars, "acc_norm,none")):
        for task in ("tm_code", "tm_humanities", "tm_math", "tm_stem"):
            domain = task.removeprefix("tm_")
            mine = [p.correct for p in ours[norm] if p.domain == domain]
            assert out["results"][task][metric] == pytest.approx(sum(mine) / len(mine))
    # the per-choice chars scores are lm-eval's sums divided by the choice's length
    for pred, q in zip(ours[ClozeNorm.chars], QUESTIONS):
        expected = [ll / len(c) for ll, c in zip(theirs[q.id], q.choices)]
        torch.testing.assert_close(torch.tensor(pred.logprobs), torch.tensor(expected), atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("args, problem", [
    (["--builtin", "--name", "9bad"], "--name '9bad' must start with a letter"),
    (["--builtin", "--split", "dev"], "--split 'dev' is unknown"),
    ([], "no questions"),
])
def test_export_bad_input_is_one_line_and_writes_nothing(tmp_path, args, problem):
    from tests.cli.helpers import run_cli

    res = run_cli("data", "export-lm-eval", tmp_path / "out", "--n-per-domain", "20", *args)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0]
    assert not (tmp_path / "out").exists()
