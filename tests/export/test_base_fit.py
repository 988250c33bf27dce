"""An adapter that does not fit its base, and outputs over the base, in the commands that take a base (issue 24):
`deploy`, `eval`, `export --to model` and `merge --export model` refuse a misfit from the base's safetensors headers
before loading, copying or merging anything, and never write into the adapter or the base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli
from tests.conftest import make_peft_adapter


@pytest.fixture(scope="module")
def misfit(tiny_base_64, tmp_path_factory) -> Path:
    """An adapter trained on the 64-wide tiny base, pointing at nothing local."""
    path = make_peft_adapter(tiny_base_64, tmp_path_factory.mktemp("misfit") / "a", seed=7, r=4, alpha=8)
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "org/elsewhere"
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def one_line(res, *needles: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    errors = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "internal error" not in errors[0], res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


def test_deploy_refuses_a_misfit_before_writing_anything(misfit, tiny_base, tmp_path):
    res = run_cli("deploy", misfit, "--base", tiny_base, "--to", tmp_path / "work" / "deep")
    one_line(res, "does not match the adapter's ΔW", "trained on another base model")
    assert not (tmp_path / "work").exists()


def test_deploy_refuses_a_truncated_adapter(adapter_set, tiny_base, tmp_path):
    import shutil

    bad = shutil.copytree(adapter_set["rs8"], tmp_path / "bad")
    data = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[:-100])
    one_line(run_cli("deploy", bad, "--base", tiny_base, "--to", tmp_path / "work"), "corrupt or truncated")
    assert not (tmp_path / "work").exists()


def test_deploy_never_writes_into_its_adapter_or_base(adapter_set, tiny_base, tmp_path):
    import shutil

    merged = shutil.copytree(adapter_set["rs8"], tmp_path / "merged")
    (tmp_path / "link").symlink_to(merged, target_is_directory=True)
    before = snapshot(merged, tiny_base)
    for to in (merged, merged / "work", tmp_path / "link", tmp_path / "link" / "work", Path(tiny_base) / "work"):
        one_line(run_cli("deploy", merged, "--base", tiny_base, "--to", to, "--force"), "overlaps")
    assert snapshot(merged, tiny_base) == before


def test_a_failed_deploy_fold_leaves_no_folder_behind(adapter_set, tmp_path):
    to = tmp_path / "new" / "work"
    # --fold needs a local base folder: a hub id fails inside the fold writer, after the staging began
    one_line(run_cli("deploy", adapter_set["rs8"], "--base", "org/hub-only", "--to", to, "--fold"),
             "--fold needs a local base folder")
    assert not (tmp_path / "new").exists()


def test_eval_refuses_a_misfit_before_loading_the_base(misfit, tiny_base, tmp_path, monkeypatch):
    from tiesmerge.eval import models

    def no_load(*a, **k):
        raise AssertionError("the base was loaded before the adapter was checked")

    monkeypatch.setattr(models, "load_base", no_load)
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question": "2+2?", "choices": ["4", "5", "6", "7"], "answer": "A"}) + "\n")
    res = run_cli("eval", "--base", tiny_base, "--adapter", f"x={misfit}", "--data", q, "--out", tmp_path / "res")
    one_line(res, "adapter 'x'", "does not match the adapter's ΔW")
    assert not (tmp_path / "res").exists()


def test_merge_export_model_checks_the_base_before_the_merge(misfit, adapter_set, tiny_base, tmp_path):
    res = run_cli("merge", "--adapter", f"a={misfit}", "--rank", "4", "-o", tmp_path / "m", "--export", "model",
                  "--export-base", tiny_base)
    one_line(res, "does not match the adapter's ΔW")
    (tmp_path / "empty").mkdir()
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}", "--rank", "4", "-o", tmp_path / "m",
                  "--export", "model", "--export-base", tmp_path / "empty")
    one_line(res, "no *.safetensors weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_export_model_never_writes_over_the_base_or_the_adapter(adapter_set, tiny_base, tmp_path):
    import shutil

    base = shutil.copytree(tiny_base, tmp_path / "base")
    before = snapshot(base, adapter_set["rs8"])
    for out in (base, base / "sub", adapter_set["rs8"]):
        res = run_cli("export", adapter_set["rs8"], "--to", "model", "--base", base, "-o", out, "--force")
        one_line(res, "overlaps")
    assert snapshot(base, adapter_set["rs8"]) == before


def test_deploy_to_an_overlong_path_is_one_line(adapter_set, tiny_base, tmp_path):
    res = run_cli("deploy", adapter_set["rs8"], "--base", tiny_base, "--to", tmp_path / ("w" * 300))
    one_line(res, "the file system allows", "choose a shorter --to path")
    assert list(tmp_path.iterdir()) == []
