"""Every bad input: exit 2, one line on stderr naming the problem, and no output directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.cli.helpers import run_cli


def clone(src, dst):
    shutil.copytree(src, dst)
    return dst


def edit_config(path, **changes):
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def edit_tensors(path, fn):
    tensors = load_file(path / "adapter_model.safetensors")
    fn(tensors)
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    return path


def _nan(t):
    key = sorted(t)[3]
    t[key][0, 0] = float("nan")


def _inf(t):
    key = sorted(t)[-1]
    t[key][-1, -1] = float("inf")


def _bin_only(p):
    (p / "adapter_model.safetensors").rename(p / "adapter_model.bin")
    return p


def _truncate(p):
    f = p / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-64])
    return p


def _garbage(p):
    (p / "adapter_model.safetensors").write_bytes(b"not a safetensors file" * 10)
    return p


def _no_config(p):
    (p / "adapter_config.json").unlink()
    return p


def _bad_json(p):
    (p / "adapter_config.json").write_text("{not json")
    return p


def _extra_tensor(p):
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"
    return edit_tensors(p, lambda t: t.__setitem__(key, torch.ones(32)))


def _missing_b(p):
    return edit_tensors(p, lambda t: t.pop("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"))


def _rank_disagrees(p):
    return edit_config(p, r=5)


BROKEN = {
    "missing_dir": (lambda p: p / "nope", "does not exist"),
    "no_config": (_no_config, "no adapter_config.json"),
    "bad_json": (_bad_json, "not valid JSON"),
    "bin_only": (_bin_only, "adapter_model.bin"),
    "no_weights": (lambda p: (p / "adapter_model.safetensors").unlink() or p, "no adapter_model.safetensors"),
    "not_lora": (lambda p: edit_config(p, peft_type="IA3"), "peft_type is 'IA3'"),
    "dora": (lambda p: edit_config(p, use_dora=True), "use_dora"),
    "lora_bias": (lambda p: edit_config(p, lora_bias=True), "lora_bias"),
    "target_parameters": (lambda p: edit_config(p, target_parameters=["experts.gate_up_proj"]), "target_parameters"),
    "modules_to_save": (lambda p: edit_config(p, modules_to_save=["lm_head"]), "modules_to_save"),
    "nan": (lambda p: edit_tensors(p, _nan), "NaN or Inf"),
    "inf": (lambda p: edit_tensors(p, _inf), "NaN or Inf"),
    "truncated": (_truncate, "corrupt or truncated"),
    "garbage": (_garbage, "corrupt or truncated"),
    "extra_tensor": (_extra_tensor, "not a LoRA factor"),
    "missing_b": (_missing_b, "only one of lora_A / lora_B"),
    "rank_disagrees": (_rank_disagrees, "adapter_config says r=5"),
}


def assert_refused(res, out, needle):
    assert res.exit_code == 2, (res.exit_code, res.output, res.stderr)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error")]
    # one error line, the last thing printed (progress lines may precede it)
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), res.stderr
    assert needle in errors[0], errors[0]
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_adapter_is_refused(adapter_set, tmp_path, case):
    make, needle = BROKEN[case]
    broken = make(clone(adapter_set["rs8"], tmp_path / "broken"))
    out = tmp_path / "out"
    res = run_cli("merge", "--adapter", f"good={adapter_set['rs16']}", "--adapter", f"bad={broken}", "-o", out)
    assert_refused(res, out, needle)


def test_shape_mismatch_is_refused(adapter_set, tmp_path):
    def widen(t):
        key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        t[key] = torch.randn(t[key].shape[0], 40)

    other = edit_tensors(clone(adapter_set["rs8"], tmp_path / "other"), widen)
    out = tmp_path / "out"
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs16']}", "--adapter", f"b={other}", "-o", out)
    assert_refused(res, out, "model.layers.0.self_attn.q_proj")


def test_base_mismatch_refused_unless_allowed(adapter_set, tmp_path):
    other = edit_config(clone(adapter_set["rs8"], tmp_path / "other"), base_model_name_or_path="Qwen/Qwen2.5-72B")
    out = tmp_path / "out"
    args = ["merge", "--adapter", f"a={adapter_set['rs16']}", "--adapter", f"b={other}", "-o", out]
    assert_refused(run_cli(*args), out, "different base models")
    res = run_cli(*args, "--allow-base-mismatch")
    assert res.exit_code == 0, res.stderr
    assert (out / "adapter_model.safetensors").is_file()


def test_recipe_base_model_is_checked(adapter_set, tmp_path):
    out = tmp_path / "out"
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs16']}", "--base-model", "meta-llama/Llama-3-8B", "-o", out)
    assert_refused(res, out, "recipe base_model")


RECIPES = {
    "density_range": ({"parameters": {"density": 1.5}}, "parameters.density"),
    "trim_and_density": ({"parameters": {"density": 0.5, "trim": 0.2}}, "either density"),
    "unknown_key": ({"parameters": {"densty": 0.5}}, "densty"),
    "not_applicable": ({"method": "task_arithmetic", "parameters": {"density": 0.5}}, "do not apply"),
    "bad_method": ({"method": "slerp"}, "method"),
    "bad_rank": ({"output": {"rank": 0}}, "rank"),
    "bad_rank_word": ({"output": {"rank": "most"}}, "output.rank"),
    "dupe_names": ({"dupe": True}, "unique"),
    "trim_range": ({"parameters": {"trim": 1.0}}, "trim must be"),
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_bad_recipe_is_refused(adapter_set, tmp_path, case):
    change, needle = RECIPES[case]
    adapters = [{"name": "a", "path": str(adapter_set["rs8"])}, {"name": "b", "path": str(adapter_set["rs16"])}]
    if change.pop("dupe", False):
        adapters[1]["name"] = "a"
    recipe = {"method": "ties", "adapters": adapters, **change}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    assert_refused(run_cli("merge", path, "-o", out), out, needle)
    assert run_cli("validate", path).exit_code == 2


def test_invalid_yaml_and_missing_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ties\nadapters: [\n")
    out = tmp_path / "out"
    assert_refused(run_cli("merge", bad, "-o", out), out, "not valid YAML")
    assert_refused(run_cli("merge", tmp_path / "missing.yaml", "-o", out), out, "not found")


def test_existing_output_needs_force(adapter_set, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}", "-o", out)
    assert res.exit_code == 2 and "--force" in res.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}", "-o", out, "--force")
    assert res.exit_code == 0
    assert not (out / "precious.txt").exists() and (out / "adapter_config.json").is_file()


def test_console_script_exit_code_and_debug(adapter_set, tmp_path):
    """The installed entry point: exit 2, one line, no traceback; --debug shows the traceback."""
    exe = [sys.executable, "-m", "tiesmerge.cli.app"]
    args = ["merge", "--adapter", f"a={tmp_path / 'missing'}", "-o", str(tmp_path / "out")]
    proc = subprocess.run(exe + args, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    proc = subprocess.run(exe + ["--debug"] + args, capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_output_overlapping_an_input_is_refused(adapter_set, tmp_path):
    victim = clone(adapter_set["rs8"], tmp_path / "victim")
    before = (victim / "adapter_model.safetensors").read_bytes()
    for out in (victim, victim / "sub", tmp_path):
        res = run_cli("merge", "--adapter", f"a={victim}", "-o", out, "--force")
        assert res.exit_code == 2 and "overlaps input adapter" in res.stderr, res.stderr
    assert (victim / "adapter_model.safetensors").read_bytes() == before


def test_nan_weight_in_recipe_is_refused(adapter_set, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"adapters:\n  - {{path: {adapter_set['rs8']}, weight: .nan}}\n")
    out = tmp_path / "out"
    assert_refused(run_cli("merge", path, "-o", out), out, "adapters.0.weight")
