"""Every fault class ends with one line, the right exit code and nothing stranded: signals, a full disk and other
disk errors, odd output paths, clamped ranks and no-op merges, unreadable / looping / transposed / partial
adapters, duplicate question ids. Adapters are written by hand (no PEFT), so this runs in `make test-min` too."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.cli.helpers import run_cli
from tests.cli.test_core_install import read_adapter, write_adapter

pytestmark = pytest.mark.core


def merge_args(pair, out, *extra):
    a, b = pair
    return ("merge", "--adapter", f"a={a}", "--adapter", f"b={b}", "--density", "0.5", "--rank", "4", "-o", out,
            *extra)


def one_line(res, code: int, *needles: str) -> str:
    assert res.exit_code == code, (res.exit_code, res.output, res.stderr)
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name or
                  p.name.endswith(".data"))


# -- signals ------------------------------------------------------------------------------------
def big_adapter(path: Path, seed: int, modules: int = 160, dim: int = 512, r: int = 8) -> None:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(modules):
        name = f"base_model.model.model.layers.{i}.mlp.down_proj"
        tensors[f"{name}.lora_A.weight"] = torch.randn(r, dim, generator=gen)
        tensors[f"{name}.lora_B.weight"] = torch.randn(dim, r, generator=gen)
    path.mkdir()
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": r,
                                                          "target_modules": ["down_proj"]}))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_mid_merge_cleans_up_and_says_so(tmp_path, sig):
    big_adapter(tmp_path / "a", 1)
    big_adapter(tmp_path / "b", 2)
    out = tmp_path / "merged"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiesmerge.cli.app", "merge", "--adapter", f"a={tmp_path / 'a'}", "--adapter",
         f"b={tmp_path / 'b'}", "--density", "0.2", "--rank", "8", "--device", "cpu", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not any(".tmp-" in p.name for p in tmp_path.iterdir()):  # the merge has started writing
        assert proc.poll() is None and time.time() < deadline, "the merge ended before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert lines[-1] == f"error: interrupted by {signal.Signals(sig).name}; nothing was written " \
                        "(a finished output is only ever renamed into place whole)"
    assert not out.exists() and leftovers(tmp_path) == []


def test_stale_temp_dirs_of_a_killed_run_are_removed_and_reported(pair, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".merged.tmp-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "adapter_model.safetensors.data").write_bytes(b"x" * 100)
    live = tmp_path / f".merged.tmp-{os.getpid()}-still-running"  # a run in progress is left alone
    live.mkdir()
    res = run_cli(*merge_args(pair, tmp_path / "merged"))
    assert res.exit_code == 0, res.stderr
    assert "removed 1 unfinished temp folder(s) of an earlier, interrupted run" in res.stderr
    assert not stale.exists() and live.exists()


# -- disk faults --------------------------------------------------------------------------------
@pytest.mark.parametrize("code,needle", [(errno.ENOSPC, "no space left on the device; free space there"),
                                         (errno.EDQUOT, "disk quota exceeded"),
                                         (errno.EACCES, "permission denied; choose a folder you can write to")])
def test_a_disk_error_while_writing_is_one_line_exit_2(pair, tmp_path, monkeypatch, code, needle):
    from tiesmerge.adapters import writer

    real_add = writer.StreamingSafetensorsWriter.add
    calls = []

    def failing_add(self, key, tensor):
        calls.append(key)
        if len(calls) == 3:  # mid-way, as a filling disk would
            raise OSError(code, os.strerror(code))
        return real_add(self, key, tensor)

    monkeypatch.setattr(writer.StreamingSafetensorsWriter, "add", failing_add)
    out = tmp_path / "merged"
    one_line(run_cli(*merge_args(pair, out)), 2, f"cannot write {out}", needle)
    assert not out.exists() and leftovers(tmp_path) == []


def test_too_little_free_space_is_refused_before_any_work(pair, tmp_path, monkeypatch):
    import shutil

    from tiesmerge.merge import module

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(module, "merge_module", lambda *a, **k: pytest.fail("merged before the space check"))
    one_line(run_cli(*merge_args(pair, tmp_path / "merged")), 2, "not enough free space", "MiB free")
    assert not (tmp_path / "merged").exists() and leftovers(tmp_path) == []


def test_a_temp_dir_that_cannot_be_made_is_a_permission_error(pair, tmp_path, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    one_line(run_cli(*merge_args(pair, tmp_path / "merged")), 2, "permission denied")


def test_the_writer_needs_about_one_times_the_file_on_disk(tmp_path):
    """The header is put in front of the data in place: at no point do two copies of the data exist."""
    from safetensors.torch import load_file

    from tiesmerge.adapters.writer import StreamingSafetensorsWriter

    tensors = {f"t{i}": torch.randn(300, 301) for i in range(5)}
    w = StreamingSafetensorsWriter(tmp_path / "x.safetensors", metadata={"format": "pt"})
    for k, t in tensors.items():
        w.add(k, t)
    data_size = (tmp_path / "x.safetensors.data").stat().st_size
    w.close()
    files = list(tmp_path.iterdir())
    assert files == [tmp_path / "x.safetensors"]
    assert files[0].stat().st_size - data_size < 4096  # only the header was added
    got = load_file(tmp_path / "x.safetensors")
    assert all(torch.equal(got[k], t) for k, t in tensors.items())


# -- output paths -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cwd", "parent_of_cwd", "file", "under_a_file", "inside_an_input"])
def test_odd_output_paths_are_refused_before_any_work(pair, tmp_path, monkeypatch, kind):
    from tiesmerge.merge import module

    monkeypatch.setattr(module, "merge_module", lambda *a, **k: pytest.fail("merged before the path check"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "afile").write_text("x")
    out, needle = {
        "cwd": (Path("."), "is the current folder"),
        "parent_of_cwd": (tmp_path, "one of its parents"),
        "file": (tmp_path / "afile", "is not a directory"),
        "under_a_file": (tmp_path / "afile" / "merged", "is a file, not a folder"),
        "inside_an_input": (pair[0] / "merged", "overlaps input adapter"),
    }[kind]
    one_line(run_cli(*merge_args(pair, out, "--force")), 2, needle)
    assert leftovers(tmp_path) == [] and leftovers(work) == [] and leftovers(pair[0]) == []


def test_eval_refuses_its_output_before_evaluating(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    res = run_cli("eval", "--base", "nowhere", "--builtin", "--out", tmp_path / "out")
    if res.exit_code == 2 and "extra" in res.stderr:
        pytest.skip("the [eval] extra is not installed")
    one_line(res, 2, "exists and is not empty; pass --force")


# -- ranks and no-op merges ---------------------------------------------------------------------
def test_a_rank_above_a_modules_size_is_warned_and_written_exactly(pair, tmp_path):
    out = tmp_path / "merged"
    res = run_cli(*merge_args(pair, out)[:-4], "--density", "1", "--rank", "64", "-o", out)
    assert res.exit_code == 0, res.stderr
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: output rank 64")]
    assert warn == ["warning: output rank 64 is more than 3 of 3 modules can hold (e.g. "
                    "model.layers.0.mlp.down_proj: at most 16); those are written at their largest possible rank, "
                    "exactly"]
    report = json.loads((out / "merge_report.json").read_text())
    ranks = {name: m["rank"] for name, m in report["modules"].items()}
    assert ranks == {"model.layers.0.self_attn.q_proj": 16, "model.layers.0.mlp.down_proj": 16,
                     "model.layers.1.self_attn.q_proj": 16}


def test_validate_shows_the_same_rank_warning(pair, tmp_path):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"adapters": [{"path": str(p)} for p in pair], "output": {"rank": 20}}))
    res = run_cli("validate", recipe)
    assert res.exit_code == 0 and "warning: output rank 20 is more than 3 of 3 modules can hold" in res.stderr


@pytest.mark.parametrize("args,needle", [(("--lambda", "0"), "lambda is 0"),
                                         (None, "every adapter's weight is 0")])
def test_a_merge_that_is_zero_by_its_settings_is_refused(pair, tmp_path, args, needle):
    a, b = pair
    if args is None:
        argv = ("merge", "--adapter", f"a={a}:0", "--adapter", f"b={b}:0", "-o", tmp_path / "m")
    else:
        argv = merge_args(pair, tmp_path / "m", *args)
    one_line(run_cli(*argv), 2, needle)
    assert not (tmp_path / "m").exists()


def test_all_zero_inputs_are_not_reported_as_fully_retained(tmp_path):
    from safetensors.torch import load_file

    for name in ("a", "b"):
        write_adapter(tmp_path / name, seed=3, r=4, alpha=8, rslora=False)
        t = load_file(tmp_path / name / "adapter_model.safetensors")
        save_file({k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in t.items()},
                  str(tmp_path / name / "adapter_model.safetensors"))
    out = tmp_path / "m"
    res = run_cli("merge", "--adapter", f"a={tmp_path / 'a'}", "--adapter", f"b={tmp_path / 'b'}", "--rank", "4",
                  "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "warning: the merged ΔW is 0 in every module" in res.stderr
    assert "100.00%" not in res.output
    summary = json.loads((out / "merge_report.json").read_text())["summary"]
    assert summary["zero_modules"] == 3 and summary["retained_energy_mean"] is None
    assert all(float(d.abs().max()) == 0 for d in read_adapter(out).values())


# -- adapters the loader cannot use -------------------------------------------------------------
def test_a_symlink_loop_is_named(pair, tmp_path):
    (tmp_path / "x").symlink_to(tmp_path / "y")
    (tmp_path / "y").symlink_to(tmp_path / "x")
    one_line(run_cli("merge", "--adapter", f"a={pair[0]}", "--adapter", f"x={tmp_path / 'x'}", "-o", tmp_path / "m"),
             2, "adapter 'x'", "symlink loop")


def test_an_unreadable_adapter_is_a_permission_error_not_corruption(pair, tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open
    target = str(pair[1] / "adapter_model.safetensors")

    def guarded_open(file, *a, **k):
        if str(file) == target:
            raise PermissionError(errno.EACCES, "Permission denied", target)
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded_open)
    line = one_line(run_cli(*merge_args(pair, tmp_path / "m")), 2, "adapter 'b'",
                    "permission denied reading adapter_model.safetensors")
    assert "corrupt" not in line


def test_an_unlistable_adapter_folder_is_a_permission_error(pair, tmp_path, monkeypatch):
    from tiesmerge.adapters import reader

    real = os.access
    monkeypatch.setattr(reader.os, "access", lambda p, mode: False if Path(p) == pair[1] else real(p, mode))
    one_line(run_cli(*merge_args(pair, tmp_path / "m")), 2, "adapter 'b'", "permission denied listing the folder")


def test_transposed_factors_are_named_as_such(pair, tmp_path):
    from safetensors.torch import load_file

    t = load_file(pair[1] / "adapter_model.safetensors")
    save_file({k: v.T.contiguous() for k, v in t.items()}, str(pair[1] / "adapter_model.safetensors"))
    line = one_line(run_cli(*merge_args(pair, tmp_path / "m")), 2, "adapter 'b'", "look transposed")
    assert "fix r" not in line


def test_modules_the_config_targets_but_the_adapter_lacks_are_warned(pair, tmp_path):
    cfg_path = pair[1] / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = ["q_proj", "down_proj", "v_proj"]
    cfg_path.write_text(json.dumps(cfg))
    res = run_cli(*merge_args(pair, tmp_path / "m"))
    assert res.exit_code == 0, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")] == [
        "warning: adapter 'b': its config targets v_proj but it holds no such tensors (those modules get nothing "
        "from it)"]


def test_a_module_missing_in_some_layers_is_warned():
    from tiesmerge.adapters.config import LoraSettings
    from tiesmerge.adapters.reader import missing_targets

    settings = LoraSettings(path=Path("x"), r=4, lora_alpha=4, use_rslora=False, target_modules=["q_proj", "o_proj"])
    held = {f"model.layers.{i}.self_attn.{leaf}": None for i in range(6) for leaf in ("q_proj", "o_proj")}
    assert missing_targets(settings, held, "x") == []
    del held["model.layers.4.self_attn.q_proj"]
    assert missing_targets(settings, held, "x") == [
        "adapter 'x': holds q_proj in 5 of 6 layers (missing in layer 4; a partial save?)"]
    sparse = {f"model.layers.{i}.mixer.o_proj": None for i in (0, 3)} | {
        f"model.layers.{i}.self_attn.q_proj": None for i in range(6)}
    assert missing_targets(settings, sparse, "x") == []  # o_proj in 2 of 6 layers: the architecture's layout


# -- eval data ------------------------------------------------------------------------------------
def test_duplicate_question_ids_are_an_input_error(tmp_path):
    from tiesmerge.errors import BadInputError
    from tiesmerge.eval.loaders import load_questions

    rows = [{"id": "q1", "question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": "B"},
            {"id": "q1", "question": "3+3?", "choices": ["6", "4", "5", "7"], "answer": "A"}]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadInputError, match=r"1 question id\(s\) occur more than once \('q1'\)"):
        load_questions(path)
