"""Hub ids (`org/name`, `org/name@revision`) where an adapter or base folder goes, resolved through a
huggingface_hub cache built here (no network: HF_HUB_OFFLINE=1). A local folder of that name wins; each run says
which copy it used; a missing id offline is one line."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

import tiesmerge
from tests.cli.helpers import run_cli
from tests.cli.test_core_install import write_adapter

pytest.importorskip("huggingface_hub")

MAIN, OLD = "a" * 40, "b" * 40


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A Hub cache holding org/ada at main (seed 1) and at an older commit (seed 5), org/adb at main."""
    cache = tmp_path / "hub"
    for repo, revs in (("ada", {MAIN: 1, OLD: 5}), ("adb", {MAIN: 2})):
        root = cache / f"models--org--{repo}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(MAIN)
        for commit, seed in revs.items():
            write_adapter(root / "snapshots" / commit, seed=seed, r=4, alpha=8, rslora=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return cache


def factors(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_hub_id_in_flags_recipes_and_the_api_resolves_from_the_cache(hub, tmp_path):
    res = run_cli("merge", "--adapter", "a=org/ada", "--adapter", "b=org/adb", "--density", "0.5", "--rank", "4",
                  "-o", tmp_path / "via-hub")
    assert res.exit_code == 0, res.stderr
    assert f"note: adapter 'a' org/ada: from the Hugging Face cache ({hub}/models--org--ada/snapshots/{MAIN})" \
        in res.stderr
    local = run_cli("merge", "--adapter", f"a={hub}/models--org--ada/snapshots/{MAIN}", "--adapter",
                    f"b={hub}/models--org--adb/snapshots/{MAIN}", "--density", "0.5", "--rank", "4",
                    "-o", tmp_path / "via-path")
    assert local.exit_code == 0, local.stderr
    want = factors(tmp_path / "via-path")
    for k, v in factors(tmp_path / "via-hub").items():
        assert torch.equal(v, want[k])
    (tmp_path / "r.yaml").write_text("adapters:\n - {name: a, path: org/ada}\n - {name: b, path: org/adb}\n"
                                     "parameters: {density: 0.5}\noutput: {rank: 4}\n")
    tiesmerge.merge(tmp_path / "r.yaml", output=tmp_path / "via-api")
    for k, v in factors(tmp_path / "via-api").items():
        assert torch.equal(v, want[k])
    inspected = run_cli("inspect", "org/ada@" + OLD)
    assert inspected.exit_code == 0 and f"snapshots/{OLD}" in inspected.stdout


def test_a_revision_picks_that_snapshot(hub, tmp_path):
    for rev, commit in (("", MAIN), ("@" + OLD, OLD)):
        res = run_cli("export", f"org/ada{rev}", "--to", "vllm", "-o", tmp_path / f"x{rev}")
        assert res.exit_code == 0, res.stderr
        assert f"snapshots/{commit})" in res.stderr
    assert not torch.equal(factors(tmp_path / "x")["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"],
                           factors(tmp_path / f"x@{OLD}")["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"])


def test_a_local_folder_of_that_name_wins_and_says_so(hub, tmp_path):
    write_adapter(tmp_path / "org" / "ada", seed=9, r=4, alpha=8, rslora=True)
    res = run_cli("inspect", "org/ada")
    assert res.exit_code == 0, res.stderr
    assert "using the local folder org/ada (it shadows the Hub id of that name)" in res.stderr
    assert str(hub) not in res.stdout


def test_a_missing_id_offline_is_one_line(hub, tmp_path):
    res = run_cli("merge", "--adapter", "a=org/nothing", "--adapter", "b=org/adb", "-o", tmp_path / "out")
    assert res.exit_code == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: adapter 'a' org/nothing: not in the Hugging Face cache and HF_HUB_OFFLINE=1 (or no "
                      "network); download it first (huggingface-cli download org/nothing) or give a local folder"]
    with pytest.raises(tiesmerge.BadInputError, match="org/ada@" + "c" * 40 + ": not in the Hugging Face cache"):
        tiesmerge.inspect("org/ada@" + "c" * 40)
    assert not (tmp_path / "out").exists()
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_the_cache_follows_hf_home_set_after_import(hub, tmp_path, monkeypatch):
    """huggingface_hub fixes its cache path when imported; the lookup reads the environment at call time."""
    import huggingface_hub  # noqa: F401  imported before the variables change

    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    hub.rename(tmp_path / "home" / "hub")
    res = run_cli("inspect", "org/adb")
    assert res.exit_code == 0, res.stderr
    assert f"{tmp_path / 'home' / 'hub'}/models--org--adb/snapshots/{MAIN}" in res.stderr


def test_paths_that_are_not_hub_ids_are_left_to_the_reader(hub, tmp_path):
    res = run_cli("inspect", "./org/none", "a/b/c", "/abs/x")
    assert res.exit_code == 2 and "path does not exist" in res.stderr and "Hugging Face" not in res.stderr
    shutil.rmtree(hub)


def test_a_broken_adapter_from_the_hub_cache_is_named_by_its_id_not_its_snapshot_hash(hub):
    cfg = hub / "models--org--ada" / "snapshots" / MAIN / "adapter_config.json"
    cfg.write_text('{"r": 0, "lora_alpha": 8, "target_modules": ["q_proj"], "peft_type": "LORA"}')
    res = run_cli("inspect", "org/ada", "org/adb")
    assert res.exit_code == 2
    error = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0].startswith("error: invalid: adapter 'org/ada':"), res.stderr
    with pytest.raises(tiesmerge.BadInputError, match="^adapter 'org/ada':"):
        tiesmerge.inspect(["org/ada", "org/adb"])
    seen = tiesmerge.inspect("org/adb")
    assert seen.compatible and seen.adapters[0]["name"] == "org/adb"
