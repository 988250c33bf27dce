"""The second fault pass (issue 24), one test per defect class: each input is provoked for real and must end with
exit 2 (or the signal's code), one `error:` line naming the cause and the fix, its inputs unchanged and nothing
written or stranded. Adapters are written by hand (no PEFT), so this runs in `make test-min` too."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.cli.helpers import run_cli, with_config
from tests.cli.test_core_install import write_adapter
from tests.cli.test_faults import one_line as faults_one_line

pytestmark = pytest.mark.core


def one_line(res, code: int, *needles: str) -> str:
    """test_faults' contract (the exit code, exactly one `error:` line holding the needles), and no traceback or
    internal error anywhere on stderr."""
    line = faults_one_line(res, code, *needles)
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    return line


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


def nothing_beside(folder: Path, *expected: str) -> None:
    """Only the named entries in `folder`: no output, no temp folder, no .data file."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


def merge(a, b, out, *extra):
    return run_cli("merge", "--adapter", f"a={a}", "--adapter", f"b={b}", "--density", "0.5", "--rank", "4",
                   "-o", out, *extra)


# -- non-finite and absurd scales, where they enter ------------------------------------------------------------
@pytest.mark.parametrize("change, needle", [
    ({"lora_alpha": math.nan}, "lora_alpha must be a finite number"),
    ({"lora_alpha": math.inf}, "lora_alpha must be a finite number"),
    ({"lora_alpha": 1e308}, "lora_alpha must be a finite number"),
    ({"lora_alpha": -8}, "lora_alpha must be a finite number"),
    ({"alpha_pattern": {"q_proj": math.nan}}, "alpha_pattern['q_proj'] must be a finite number"),
    ({"alpha_pattern": {"down_proj": 1e300}}, "alpha_pattern['down_proj'] must be a finite number"),
    ({"lora_alpha": True}, "lora_alpha must be a finite number"),
    ({"r": True}, "r must be a positive integer, got True"),
    ({"rank_pattern": {"q_proj": 2.5}}, "rank_pattern['q_proj'] must be a positive integer"),
    ({"use_rslora": "yes"}, "use_rslora must be true or false"),
    ({"alpha_pattern": ["q_proj"]}, "alpha_pattern must be a mapping"),
])
def test_a_nonfinite_or_absurd_adapter_config_is_refused_by_every_command(pair, tmp_path, change, needle):
    a, b = pair
    bad = with_config(a, tmp_path / "bad", **change)
    before = snapshot(bad, b)
    one_line(merge(bad, b, tmp_path / "out"), 2, needle, "adapter_config.json")
    one_line(run_cli("inspect", bad), 2, needle)
    one_line(run_cli("export", bad, "--to", "vllm", "-o", tmp_path / "vllm"), 2, needle)
    assert snapshot(bad, b) == before
    nothing_beside(tmp_path, "a", "b", "bad")


def _recipe(tmp_path, pair, *, parameters=None, output=None, weight=None) -> Path:
    a, b = pair
    first = {"name": "a", "path": str(a)} | ({"weight": weight} if weight is not None else {})
    doc = {"method": "ties", "parameters": {"density": 0.5, **(parameters or {})},
           "adapters": [first, {"name": "b", "path": str(b)}], "output": {"rank": 4, **(output or {})}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("kw, needle", [
    ({"parameters": {"lambda": 1e308}}, "parameters.lambda: lambda 1e+308 is outside [-10000, 10000]"),
    ({"parameters": {"lambda": -2e4}}, "lambda -20000 is outside [-10000, 10000]"),
    ({"parameters": {"lambda": math.nan}}, "parameters.lambda"),
    ({"weight": 1e308}, "adapters.0.weight: weight 1e+308 is outside"),
    ({"weight": math.inf}, "adapters.0.weight"),
    ({"weight": True}, "weight: expected a number, got True"),
    ({"output": {"rank": True}}, "rank: expected a number or a word, got True"),
    ({"output": {"max_rank": True}}, "max_rank: expected a number"),
    ({"parameters": {"seed": False}}, "parameters.seed: seed must be a number, got False"),
    ({"parameters": {"density": True}}, "parameters.density: density must be a number, got True"),
])
def test_absurd_or_mistyped_recipe_values_are_refused_at_load(pair, tmp_path, kw, needle):
    recipe = _recipe(tmp_path, pair, **kw)
    one_line(run_cli("merge", recipe, "-o", tmp_path / "out"), 2, needle)
    one_line(run_cli("validate", recipe), 2, needle)
    assert not (tmp_path / "out").exists()


def test_overflowing_merged_factors_are_an_error_never_an_output(tmp_path):
    """Finite inputs whose ΔW overflows float32 (3e19 · 3e19 · r): refused, not written as NaN factors."""
    write_adapter(tmp_path / "b", seed=2, r=4, alpha=8, rslora=False)
    tensors = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    (tmp_path / "huge").mkdir()
    save_file({k: torch.full_like(v, 3e19) for k, v in tensors.items()}, str(tmp_path / "huge" /
                                                                              "adapter_model.safetensors"))
    (tmp_path / "huge" / "adapter_config.json").write_bytes((tmp_path / "b" / "adapter_config.json").read_bytes())
    for space in ("full", "core"):
        line = one_line(merge(tmp_path / "huge", tmp_path / "b", tmp_path / "out", "--space", space), 2,
                        "overflow float32", "nothing was written")
        assert "module model.layers.0" in line
    nothing_beside(tmp_path, "b", "huge")


# -- outputs over inputs, through symlinks --------------------------------------------------------------------
def test_outputs_overlapping_an_input_are_refused_through_symlinks(pair, tmp_path):
    a, b = pair
    (tmp_path / "link").symlink_to(a, target_is_directory=True)
    before = snapshot(a, b)
    for out in (a, a / "sub", tmp_path / "link", tmp_path / "link" / "sub", tmp_path):
        one_line(merge(a, b, out, "--force"), 2, "overlaps input adapter 'a'")
        one_line(run_cli("export", tmp_path / "link", "--to", "vllm", "-o", out, "--force"), 2,
                 "overlaps the input adapter")
    one_line(run_cli("export", a, "--to", "gguf", "--base", b, "-o", a / "x.gguf"), 2, "overlaps the input adapter")
    assert snapshot(a, b) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "link"]


def test_a_recipe_whose_output_is_the_statistics_or_a_question_file_folder_is_refused(pair, tmp_path):
    qs = tmp_path / "qs"
    qs.mkdir()
    (qs / "q.jsonl").write_text(json.dumps({"question": "2+2?", "choices": ["4", "5", "6", "7"], "answer": "A"}))
    one_line(run_cli("data", "export-lm-eval", qs, "--data", qs / "q.jsonl", "--force"), 2,
             "overlaps question file")
    assert (qs / "q.jsonl").is_file() and sorted(p.name for p in qs.iterdir()) == ["q.jsonl"]


# -- paths the file system cannot hold, homes that do not exist -----------------------------------------------
def test_overlong_and_unexpandable_output_paths_are_one_line(pair, tmp_path):
    a, b = pair
    one_line(merge(a, b, tmp_path / ("x" * 300)), 2, "choose a shorter -o path")
    one_line(merge(a, b, tmp_path / ("y" * 240)), 2, "less 32 for the temp name")
    one_line(merge(a, b, "~no-such-user-tiesmerge/out"), 2, "cannot expand '~no-such-user-tiesmerge'")
    one_line(run_cli("export", a, "--to", "vllm", "-o", "~no-such-user-tiesmerge/x"), 2, "cannot expand")
    one_line(run_cli("examples", "create", tmp_path / ("z" * 300)), 2, "choose a shorter -o path")
    nothing_beside(tmp_path, "a", "b")


def test_a_tilde_in_a_recipe_adapter_path_is_expanded(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    recipe = _recipe(tmp_path, pair)
    doc = yaml.safe_load(recipe.read_text())
    doc["adapters"][0]["path"] = "~/a"
    recipe.write_text(yaml.safe_dump(doc))
    res = run_cli("merge", recipe, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert report["inputs"][0]["path"] == str((tmp_path / "a").resolve())


# -- deep and huge documents ----------------------------------------------------------------------------------
def test_deeply_nested_json_and_yaml_are_one_line(pair, tmp_path):
    deep = "[" * 50_000 + "]" * 50_000
    (tmp_path / "deep.json").write_text(deep)
    one_line(run_cli("data", "export-lm-eval", tmp_path / "lm", "--data", tmp_path / "deep.json"), 2,
             "nested too deeply")
    (tmp_path / "deep.jsonl").write_text('{"question": ' + deep + "}\n")
    one_line(run_cli("data", "export-lm-eval", tmp_path / "lm", "--data", tmp_path / "deep.jsonl"), 2,
             "nested")
    (tmp_path / "nested.json").write_text(json.dumps([{"question": "q", "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]
                                                                                 ]]]]]]]]]]]]]]]]]]]]]]]]]]]}]))
    one_line(run_cli("data", "export-lm-eval", tmp_path / "lm", "--data", tmp_path / "nested.json"), 2,
             "nested more than 32 levels deep")
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    one_line(run_cli("merge", tmp_path / "deep.yaml", "-o", tmp_path / "out"), 2, "recipe", "nested")
    one_line(run_cli("validate", tmp_path / "deep.yaml"), 2, "nested")
    assert not (tmp_path / "lm").exists() and not (tmp_path / "out").exists()


def test_a_question_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    from tiesmerge.portable import limits

    monkeypatch.setattr(limits, "MAX_BYTES", 100)
    (tmp_path / "q.json").write_text(json.dumps([{"question": "x" * 200, "choices": ["1", "2", "3", "4"],
                                                  "answer": "A"}]))
    one_line(run_cli("data", "export-lm-eval", tmp_path / "lm", "--data", tmp_path / "q.json"), 2,
             "over the 0 MiB limit")


def test_a_question_id_that_is_not_a_string_or_integer_is_refused(tmp_path):
    row = {"question": "2+2?", "choices": ["4", "5", "6", "7"], "answer": "A"}
    for bad in (["a", "b"], {"k": 1}, True, 1.5):
        (tmp_path / "q.jsonl").write_text(json.dumps(row | {"id": bad}) + "\n")
        one_line(run_cli("data", "export-lm-eval", tmp_path / "lm", "--data", tmp_path / "q.jsonl", "--force"), 2,
                 "id must be a string or an integer")
    (tmp_path / "q.jsonl").write_text(json.dumps(row | {"domain": ["math"]}) + "\n")
    one_line(run_cli("data", "export-lm-eval", tmp_path / "lm", "--data", tmp_path / "q.jsonl", "--force"), 2,
             "domain must be a string")
    assert not (tmp_path / "lm").exists()


# -- malformed safetensors headers ----------------------------------------------------------------------------
def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    key = sorted(k for k in header if k != "__metadata__")[0]
    edit(header[key])
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


@pytest.mark.parametrize("edit", [
    lambda e: e.update(data_offsets=[str(v) for v in e["data_offsets"]]),
    lambda e: e.update(data_offsets=[float(v) for v in e["data_offsets"]]),
    lambda e: e.update(data_offsets=[False, e["data_offsets"][1]]),
    lambda e: e.update(shape=[str(v) for v in e["shape"]]),
    lambda e: e.update(shape="ab"),
    lambda e: e.update(dtype=["F32"]),
], ids=["str-offsets", "float-offsets", "bool-offset", "str-shape", "str-as-shape", "list-dtype"])
def test_a_safetensors_header_with_mistyped_entries_is_one_line(pair, tmp_path, edit):
    a, b = pair
    _rewrite_header(a / "adapter_model.safetensors", edit)
    one_line(run_cli("inspect", a), 2, "adapter_model.safetensors is corrupt or truncated")
    one_line(merge(a, b, tmp_path / "out"), 2, "corrupt or truncated")
    assert not (tmp_path / "out").exists()


# -- mergekit recipes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc, needle", [
    ({"merge_method": "ties", "parameters": [1, 2], "models": []}, "parameters must be a mapping"),
    ({"merge_method": "ties", "models": {"a": 1}}, "models must be a list"),
    ({"merge_method": "ties", "models": [{"model": "A", "parameters": [0.5]}]}, "models[0].parameters must be a "
                                                                                  "mapping"),
    ({"merge_method": "ties", "models": [{"model": ["A"]}]}, "model must be a path"),
    ({"merge_method": "ties", "models": [{"model": "A"}], "base_model": ["x"]}, "base_model must be a string"),
])
def test_mergekit_recipes_with_the_wrong_shapes_are_one_line(pair, tmp_path, doc, needle):
    a, _ = pair
    text = yaml.safe_dump(doc).replace("model: A", f"model: {a}").replace("- A\n", f"- {a}\n")
    (tmp_path / "mk.yaml").write_text(text)
    one_line(run_cli("merge", tmp_path / "mk.yaml", "-o", tmp_path / "out"), 2, needle)


def test_mergekit_adapters_with_one_folder_name_are_named_by_their_path(tmp_path):
    write_adapter(tmp_path / "x" / "a" / "m", seed=1, r=4, alpha=8, rslora=True)
    write_adapter(tmp_path / "x" / "b" / "m", seed=2, r=4, alpha=8, rslora=True)
    write_adapter(tmp_path / "y" / "c", seed=3, r=4, alpha=8, rslora=True)
    doc = {"merge_method": "ties", "parameters": {"density": 0.5},
           "models": [{"model": str(tmp_path / "x" / "a" / "m")}, {"model": "x/b/m/"}, {"model": "y/c"}]}
    (tmp_path / "mk.yaml").write_text(yaml.safe_dump(doc))
    res = run_cli("merge", tmp_path / "mk.yaml", "--rank", "4", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert [i["name"] for i in report["inputs"]] == ["a/m", "b/m", "c"]


# -- factors swapped ------------------------------------------------------------------------------------------
def test_swapped_factors_are_named_as_swapped_not_as_another_base(pair, tmp_path):
    """lora_A holding Bᵀ and lora_B holding Aᵀ: a valid-looking adapter of ΔWᵀ."""
    a, b = pair
    tensors = load_file(str(a / "adapter_model.safetensors"))
    swapped = {}
    for key, t in tensors.items():
        other = key.replace("lora_A", "lora_X").replace("lora_B", "lora_A").replace("lora_X", "lora_B")
        swapped[other] = t.T.contiguous()
    save_file(swapped, str(a / "adapter_model.safetensors"))
    line = one_line(merge(a, b, tmp_path / "out"), 2, "look swapped", "lora_A = B.T")
    assert "different base" not in line
    assert not (tmp_path / "out").exists()


# -- notes for ignored settings -------------------------------------------------------------------------------
def test_energy_beside_an_int_rank_is_noted(pair, tmp_path):
    a, b = pair
    res = merge(a, b, tmp_path / "out", "--energy", "0.5")
    assert res.exit_code == 0, res.stderr
    assert "note: --energy applies only with rank auto; ignored with rank 4" in res.stderr
    res = merge(a, b, tmp_path / "out2", "--energy", "0.5", "--rank", "auto")
    assert res.exit_code == 0 and "applies only" not in res.stderr


# -- the card's front matter ----------------------------------------------------------------------------------
def test_the_card_front_matter_is_yaml_whatever_the_base_name(pair, tmp_path):
    a, b = pair
    one_line(merge(with_config(a, tmp_path / "nl", base_model_name_or_path="org/x\nlicense: stolen"), b,
                   tmp_path / "out"), 2, "base_model_name_or_path contains a line break")
    one_line(merge(with_config(a, tmp_path / "num", base_model_name_or_path=5), b, tmp_path / "out"), 2,
             "base_model_name_or_path must be a string")
    odd = "org/x: y # 'z' [q]"
    res = merge(with_config(a, tmp_path / "c1", base_model_name_or_path=odd),
                with_config(b, tmp_path / "c2", base_model_name_or_path=odd), tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    card = (tmp_path / "out" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front == {"library_name": "peft", "base_model": odd, "tags": ["lora", "merge", "tiesmerge", "ties"]}


# -- a signal while Python is still importing -----------------------------------------------------------------
@pytest.mark.parametrize("how", [["-c", "from tiesmerge.cli.entry import main; main()"], ["-m", "tiesmerge"]],
                         ids=["console-script", "python-m"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_start_up_is_one_line_with_the_signals_code(tmp_path, sig, how):
    env = {**os.environ, "TIESMERGE_TEST_SLOW_START": "30"}
    proc = subprocess.Popen([sys.executable, *how, "methods"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    time.sleep(1.0)  # inside the start-up window (the handler is the entry's first statement)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"error: interrupted by {signal.Signals(sig).name} while starting; "
                                        "nothing was written"]
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_starts_with_the_signal_handler():
    """pyproject's entry point is the light module whose first act is installing the handler."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tiesmerge"] == "tiesmerge.cli.entry:main"
    probe = "import sys, tiesmerge.cli.entry; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
            "('torch', 'typer', 'pydantic', 'rich')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


# -- disk faults in `examples create` -------------------------------------------------------------------------
def test_examples_create_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from tiesmerge.adapters import writer

    calls = []
    real_add = writer.StreamingSafetensorsWriter.add

    def failing_add(self, key, tensor):
        calls.append(key)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_add(self, key, tensor)

    monkeypatch.setattr(writer.StreamingSafetensorsWriter, "add", failing_add)
    one_line(run_cli("examples", "create", tmp_path / "ex", "--layers", "1"), 2, "no space left on the device")
    assert list(tmp_path.iterdir()) == []


def test_examples_create_checks_free_space_before_writing(tmp_path, monkeypatch):
    import shutil as sh

    from tiesmerge import atomic

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    one_line(run_cli("examples", "create", tmp_path / "ex", "--layers", "2"), 2, "not enough free space")
    assert list(tmp_path.iterdir()) == []



def test_a_deeply_nested_adapter_config_and_unexpandable_input_paths_are_one_line(pair, tmp_path):
    a, b = pair
    (a / "adapter_config.json").write_text("[" * 50_000 + "]" * 50_000)
    one_line(run_cli("inspect", a), 2, "nested too deeply")
    one_line(merge(a, b, tmp_path / "out"), 2, "nested too deeply")
    one_line(run_cli("export", "~no-such-user-tiesmerge/x", "--to", "vllm", "-o", tmp_path / "v"), 2,
             "cannot expand '~no-such-user-tiesmerge'")
    one_line(run_cli("inspect", "~no-such-user-tiesmerge/x"), 2, "cannot expand")
    assert not (tmp_path / "out").exists() and not (tmp_path / "v").exists()


def test_an_export_whose_scaled_factors_overflow_writes_nothing(tmp_path):
    """B × scale beyond bf16 / float32 range (huge finite factors): refused, never written as inf."""
    write_adapter(tmp_path / "b", seed=2, r=4, alpha=8, rslora=False)
    tensors = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    (tmp_path / "huge").mkdir()
    save_file({k: torch.full_like(v, 3e38) for k, v in tensors.items()},
              str(tmp_path / "huge" / "adapter_model.safetensors"))
    cfg = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    (tmp_path / "huge" / "adapter_config.json").write_text(json.dumps(cfg | {"lora_alpha": 64}))
    one_line(run_cli("export", tmp_path / "huge", "--to", "vllm", "-o", tmp_path / "v"), 2, "overflows float32",
             "nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "huge"]
