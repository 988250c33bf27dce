"""The deployed agents in the tournament image's versions (transformers 4.46.3, peft 0.17.1, bitsandbytes 0.45.0;
`make test-image` builds that venv, without tiesmerge, and points TIESMERGE_IMAGE_PYTHON at it).

The base (the embedded SmolLM2-135M, its cached folder saved by transformers 5) and an RSLoRA adapter (saved by
today's peft) are what a user brings: the old stack must read them (5.x tokenizer class and chat template file, RoPE
theta 100000 in `rope_parameters`, newer adapter_config keys, RSLoRA scaling) and give the letters and log-probs
today's stack gives for the same deployed directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.test_deploy import NO_TIESMERGE, QUESTIONS
from tiesmerge.agents.deploy import deploy
from tiesmerge.portable.schema import check_answer, check_question

pytestmark = pytest.mark.image
IMAGE_PYTHON = os.environ.get("TIESMERGE_IMAGE_PYTHON")
EXPECTED = {"transformers": "4.46.3", "peft": "0.17.1", "bitsandbytes": "0.45.0"}


@pytest.fixture(scope="module")
def image_python() -> str:
    if not IMAGE_PYTHON:
        pytest.fail("TIESMERGE_IMAGE_PYTHON is not set: run `make test-image`")
    return str(Path(IMAGE_PYTHON).absolute())  # not resolved: the venv's python is a link


def _run(python: str, workdir: Path, *args: str, block: bool = False) -> subprocess.CompletedProcess:
    cmd = [python, "-c", NO_TIESMERGE, *args] if block else [python, "-m", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_image_venv_has_the_images_versions_and_no_tiesmerge(image_python, tmp_path):
    code = ("import importlib.util, json, transformers, peft, bitsandbytes; "
            "print(json.dumps({'transformers': transformers.__version__, 'peft': peft.__version__, "
            "'bitsandbytes': bitsandbytes.__version__, 'tiesmerge': importlib.util.find_spec('tiesmerge') is not None}))")
    proc = subprocess.run([image_python, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {**EXPECTED, "tiesmerge": False}


@pytest.fixture(scope="module")
def smollm2_adapter(tmp_path_factory) -> Path:
    from tests.conftest import make_peft_adapter
    from tiesmerge.eval.models import embedded_base

    out = tmp_path_factory.mktemp("smollm2_adapter") / "rs8"
    return make_peft_adapter(embedded_base("smollm2"), out, seed=4, r=8, alpha=16, rslora=True,
                             targets=("q_proj", "v_proj", "down_proj"))


def test_both_commands_in_the_image_match_todays_stack(image_python, tmp_path, smollm2_adapter):
    work = tmp_path / "work"
    deploy(smollm2_adapter, "smollm2", work, bank_size=6)
    (work / "outputs" / "filtered_questions.json").write_text(json.dumps(QUESTIONS))
    (work / "agen.yaml").write_text("max_tokens: 6\n")
    answer = ("agents.answer_agent", "--input_file", "outputs/filtered_questions.json", "--output_file")
    proc = _run(image_python, work, *answer, "outputs/answers.json", "--verbose")
    assert "over the limit: none" in proc.stderr
    old = json.loads((work / "outputs" / "answers.json").read_text())
    assert len(old) == 3 and all(check_answer(a) == [] for a in old)
    _run(sys.executable, work, *answer, "outputs/answers_now.json", "--verbose", block=True)
    now = json.loads((work / "outputs" / "answers_now.json").read_text())
    assert [a["answer"] for a in old] == [a["answer"] for a in now]
    old_lp = [it["letter_logprobs"] for it in json.loads((work / "outputs" / "answers.timing.json").read_text())["items"]]
    now_lp = [it["letter_logprobs"] for it in json.loads((work / "outputs" / "answers_now.timing.json").read_text())["items"]]
    assert old_lp[2] is None and now_lp[2] is None  # the malformed entry
    for a, b in zip(old_lp[:2], now_lp[:2]):
        assert a == pytest.approx(b, abs=1e-4)  # same weights, same RSLoRA scale, same prompt

    proc = _run(image_python, work, "agents.question_agent", "--output_file", "outputs/questions.json",
                "--num_questions", "5", "--verbose")
    questions = json.loads((work / "outputs" / "questions.json").read_text())
    assert len(questions) == 5 and all(check_question(q) == [] for q in questions)
    assert len({q["question"] for q in questions}) == 5 and "over the limit: none" in proc.stderr
