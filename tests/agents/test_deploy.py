"""`tiesmerge deploy`, agents.yaml (with agen.yaml / qgen.yaml), and the tournament command lines run by subprocess
with tiesmerge made unimportable (the deployed agents are self-contained)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiesmerge.agents.deploy import PORTABLE, deploy
from tiesmerge.errors import BadInputError
from tiesmerge.portable.cli import answer_main, question_main
from tiesmerge.portable.config import load_agents_config
from tiesmerge.portable.errors import AgentInputError
from tiesmerge.portable.schema import check_answer, check_question

QUESTIONS = [
    {"question": "What is 7 × 6?", "choices": ["A) 42", "B) 36", "C) 48", "D) 54"]},
    {"question": "Which gas do plants absorb?", "choices": {"A": "Oxygen", "B": "Carbon dioxide", "C": "Helium",
                                                           "D": "Neon"}},
    {"question": "Broken", "choices": ["A) one", "B) two"]},
]


@pytest.fixture(scope="module")
def merged(adapter_set) -> Path:
    return adapter_set["rs8"]


@pytest.fixture
def workdir(tmp_path, tiny_base, merged) -> Path:
    deploy(merged, str(tiny_base), tmp_path / "work")
    return tmp_path / "work"


def test_deploy_writes_the_tournament_layout(workdir, merged, tiny_base):
    for name in ("question_agent.py", "question_model.py", "answer_agent.py", "answer_model.py", "__init__.py"):
        assert (workdir / "agents" / name).is_file()
    runtime = sorted(p.name for p in (workdir / "agents" / "runtime").iterdir())
    assert runtime == sorted(p.name for p in PORTABLE.glob("*.py"))  # a verbatim copy, no caches
    for name in runtime:
        assert (workdir / "agents" / "runtime" / name).read_bytes() == (PORTABLE / name).read_bytes()
    assert not [line for f in (workdir / "agents").rglob("*.py") for line in f.read_text().splitlines()
                if line.lstrip().startswith(("import tiesmerge", "from tiesmerge"))]
    bank = json.loads((workdir / "fallback_bank.json").read_text())
    assert bank["version"] == 1 and all(len(v) == 60 for v in bank["questions"].values())
    assert all(check_question(q) == [] for v in bank["questions"].values() for q in v)
    assert (workdir / "outputs").is_dir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (workdir / "adapter" / name).read_bytes() == (merged / name).read_bytes()
    cfg, root = load_agents_config(workdir / "agents.yaml")
    assert cfg.base == str(Path(tiny_base).resolve()) and cfg.adapter == "adapter" and cfg.load_in_4bit is None
    assert cfg.bank == "fallback_bank.json"
    assert not [p for p in workdir.iterdir() if p.name.startswith(".tiesmerge-deploy")]  # staging removed


def test_deploy_refuses_to_overwrite_without_force_and_keeps_outputs_with_it(workdir, merged, tiny_base):
    (workdir / "outputs" / "answers.json").write_text("[]")
    with pytest.raises(BadInputError, match="already holds a deployment.*--force"):
        deploy(merged, str(tiny_base), workdir)
    deploy(merged, str(tiny_base), workdir, force=True, link=True, load_in_4bit=True)
    assert (workdir / "adapter").is_symlink() and (workdir / "adapter").resolve() == merged.resolve()
    assert (workdir / "outputs" / "answers.json").read_text() == "[]"
    assert load_agents_config(workdir / "agents.yaml")[0].load_in_4bit is True


@pytest.mark.parametrize("setup, problem", [
    (lambda p: p.mkdir(), "no adapter_config.json"),
    (lambda p: (p.mkdir(), (p / "adapter_config.json").write_text("{}")), "no adapter_model.safetensors"),
    (lambda p: p.write_text("x"), "is not a folder"),
])
def test_deploy_refuses_a_bad_adapter(tmp_path, tiny_base, setup, problem):
    bad = tmp_path / "bad"
    setup(bad)
    with pytest.raises(BadInputError, match=problem):
        deploy(bad, str(tiny_base), tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_deploy_refuses_a_missing_local_base(tmp_path, merged):
    with pytest.raises(BadInputError, match="does not exist"):
        deploy(merged, "./no/such/model", tmp_path / "work")


def test_tournament_yaml_overrides_generation_settings(workdir, capsys):
    (workdir / "agen.yaml").write_text("max_tokens: 40\ntemperature: 0.2\nfoo: 1\n")
    (workdir / "qgen.yaml").write_text("max_new_tokens: 128\ndo_sample: false\n")
    cfg, _ = load_agents_config(workdir / "agents.yaml")
    assert cfg.answer.max_new_tokens == 40 and cfg.answer.temperature == 0.2
    assert cfg.question.max_new_tokens == 128 and cfg.question.temperature == 0.0
    assert "agen.yaml: ignoring foo" in capsys.readouterr().err


@pytest.mark.parametrize("text, problem", [
    ("answer:\n  deadline_s: 6.5\n", "under the 6 s limit"),
    ("answer:\n  batch_size: 0\n", "answer.batch_size"),
    ("answer:\n  max_new_tokens: 0\n", "answer.max_new_tokens"),
    ("question:\n  colour: red\n", "question.colour"),
    ("- a list\n", "must be a YAML mapping"),
])
def test_bad_agents_yaml_is_one_line_error(workdir, text, problem):
    cfg = yaml.safe_load((workdir / "agents.yaml").read_text())
    path = workdir / "agents.yaml"
    if text.startswith("-"):
        path.write_text(text)
    else:
        for section, values in yaml.safe_load(text).items():
            cfg[section] = {**cfg[section], **values}
        path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(AgentInputError, match=problem):
        load_agents_config(path)


@pytest.mark.parametrize("content, problem", [
    (None, "does not exist"),
    ("{not json", "is not JSON"),
    ('{"a": 1}', "must be a list of questions"),
])
def test_unreadable_input_exits_2_before_loading_and_writes_nothing(tmp_path, capsys, content, problem):
    src = tmp_path / "in.json"
    if content is not None:
        src.write_text(content)
    out = tmp_path / "answers.json"
    rc = answer_main(["--input_file", str(src), "--output_file", str(out), "--config", str(tmp_path / "none.yaml")])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --input_file") and problem in err[0]


def test_question_agent_rejects_bad_counts_and_topics(tmp_path, capsys):
    assert question_main(["--num_questions", "0", "--output_file", str(tmp_path / "q.json")]) == 2
    (tmp_path / "topics.txt").write_text("\n\n")
    assert question_main(["--topics_file", str(tmp_path / "topics.txt"), "--output_file", str(tmp_path / "q.json")]) == 2
    assert not (tmp_path / "q.json").exists()


# runs `python -m MODULE ARGS` with every tiesmerge import failing (as where only the image's packages exist)
NO_TIESMERGE = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tiesmerge" or name.startswith("tiesmerge."):
            raise ImportError("tiesmerge is not installed here")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _run_module(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    return subprocess.run([sys.executable, "-c", NO_TIESMERGE, *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_blocker_really_blocks(workdir):
    proc = subprocess.run([sys.executable, "-c", NO_TIESMERGE, "tiesmerge.cli"], cwd=workdir, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "tiesmerge is not installed here" in proc.stderr


def test_both_commands_run_in_the_deployed_directory(workdir):
    """Exactly the tournament's invocations, in DIR, by subprocess."""
    (workdir / "outputs" / "filtered_questions.json").write_text(json.dumps(QUESTIONS))
    (workdir / "agen.yaml").write_text("max_tokens: 24\n")
    (workdir / "qgen.yaml").write_text("max_tokens: 48\n")
    proc = _run_module(workdir, "agents.answer_agent", "--input_file", "outputs/filtered_questions.json",
                       "--output_file", "outputs/answers.json", "--verbose")
    assert proc.returncode == 0, proc.stderr
    answers = json.loads((workdir / "outputs" / "answers.json").read_text())
    assert len(answers) == 3 and all(check_answer(a) == [] for a in answers)
    assert "malformed" not in json.dumps(answers[:2]) and "need exactly 4 choices" in answers[2]["reasoning"]
    report = json.loads((workdir / "outputs" / "answers.timing.json").read_text())
    assert [it["index"] for it in report["items"]] == [0, 1, 2] and report["max_s"] < 6
    assert all(it["batch"] == 0 for it in report["items"])  # one batch: 3 < answer.batch_size
    assert "[answer 3/3]" in proc.stderr and "over the limit: none" in proc.stderr

    proc = _run_module(workdir, "agents.question_agent", "--output_file", "outputs/questions.json",
                       "--num_questions", "5", "--verbose")
    assert proc.returncode == 0, proc.stderr
    questions = json.loads((workdir / "outputs" / "questions.json").read_text())
    assert len(questions) == 5 and all(check_question(q) == [] for q in questions)
    assert len({q["question"] for q in questions}) == 5
    assert "[question 5/5]" in proc.stderr and "over the limit: none" in proc.stderr


def test_answer_agent_on_a_4bit_base(tmp_path, tiny_base_64):
    """NF4 via bitsandbytes (here on CPU, 64-wide layers): the adapter stays a PEFT layer on the quantized base;
    answers are valid."""
    pytest.importorskip("bitsandbytes")
    from tests.conftest import make_peft_adapter

    merged = make_peft_adapter(tiny_base_64, tmp_path / "adapter64", seed=5, r=8, alpha=16)
    deploy(merged, str(tiny_base_64), tmp_path / "w4", load_in_4bit=True, bank_size=4)
    src = tmp_path / "q.json"
    src.write_text(json.dumps(QUESTIONS[:2]))
    out = tmp_path / "w4" / "outputs" / "answers.json"
    (tmp_path / "w4" / "agen.yaml").write_text("max_tokens: 8\n")
    assert answer_main(["--input_file", str(src), "--output_file", str(out)],
                       default_config=tmp_path / "w4" / "agents.yaml") == 0
    answers = json.loads(out.read_text())
    assert len(answers) == 2 and all(check_answer(a) == [] for a in answers)


def test_deploy_command_bad_input_is_exit_2_one_line(tmp_path, tiny_base):
    from tests.cli.helpers import run_cli

    res = run_cli("deploy", tmp_path / "missing", "--base", tiny_base, "--to", tmp_path / "work")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a folder" in lines[0]
    assert not (tmp_path / "work").exists()


def test_deploy_command_writes_and_prints_the_next_step(tmp_path, tiny_base, merged):
    from tests.cli.helpers import run_cli

    res = run_cli("deploy", merged, "--base", tiny_base, "--to", tmp_path / "work", "--link")
    assert res.exit_code == 0, res.stderr
    assert "python -m agents.question_agent" in res.stdout and (tmp_path / "work" / "adapter").is_symlink()


def test_deploy_fold_writes_one_model_that_scores_like_base_plus_adapter(tmp_path, tiny_base, merged):
    """--fold: DIR/model/ is the base with ΔW folded in (no adapter at run time); its letter log-probs equal the
    unfolded deployment's (fp32, so only rounding differs)."""
    from tests.cli.helpers import run_cli
    from tiesmerge.portable.answer import parse_entry
    from tiesmerge.portable.letters import LetterScorer
    from tiesmerge.portable.loader import load_agent_model

    res = run_cli("deploy", merged, "--base", tiny_base, "--to", tmp_path / "folded", "--fold", "--bank-size", "3")
    assert res.exit_code == 0, res.stderr
    assert "model/ (base + adapter folded)" in res.stdout and not (tmp_path / "folded" / "adapter").exists()
    folded_cfg, folded_root = load_agents_config(tmp_path / "folded" / "agents.yaml")
    assert folded_cfg.base == "model" and folded_cfg.adapter is None
    deploy(merged, str(tiny_base), tmp_path / "plain", bank_size=3)
    plain_cfg, plain_root = load_agents_config(tmp_path / "plain" / "agents.yaml")
    questions = [parse_entry(q) for q in QUESTIONS[:2]]
    scores = []
    for cfg, root in ((folded_cfg, folded_root), (plain_cfg.replace(merge_adapter=False), plain_root)):
        loaded = load_agent_model(cfg, root, lambda m: None)
        scores.append(LetterScorer(loaded.model, loaded.tokenizer).logprobs(questions))
    import torch

    torch.testing.assert_close(scores[0], scores[1], atol=1e-4, rtol=0)
    base_only = load_agent_model(plain_cfg.replace(adapter=None), plain_root, lambda m: None)
    assert not torch.allclose(LetterScorer(base_only.model, base_only.tokenizer).logprobs(questions), scores[1],
                              atol=1e-3)  # the adapter matters in these logits


def test_deploy_fold_refuses_a_hub_base(tmp_path, merged):
    from tests.cli.helpers import run_cli

    res = run_cli("deploy", merged, "--base", "Qwen/Qwen2.5-72B-Instruct", "--to", tmp_path / "w", "--fold")
    assert res.exit_code == 2 and "--fold needs a local base folder" in res.stderr
    assert not (tmp_path / "w" / "agents").exists() and not [p for p in (tmp_path / "w").glob(".tiesmerge-deploy*")]
