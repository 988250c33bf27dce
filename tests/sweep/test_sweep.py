"""tiesmerge sweep on tiny fixtures: points equal one-off merges, resume after a failure, outputs, selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.cli.helpers import run_cli
from tiesmerge.errors import BadInputError
from tiesmerge.merge.types import Method
from tiesmerge.sweep import runner as runner_mod
from tiesmerge.sweep.config import Metric, load_sweep_config
from tiesmerge.sweep.selection import select

WORDS = ["red", "blue", "green", "gold", "pink", "grey", "teal", "navy", "lime", "plum", "rose", "jade"]


def _questions(path: Path, domain: str, seed: int, n: int = 6) -> Path:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        choices = rng.sample(WORDS, 4)
        rows.append({"question": f"{domain} {i}: which colour?", "choices": choices, "answer": "ABCD"[i % 4],
                     "domain": domain})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def sweep_yaml(tmp_path, tiny_base, adapter_set) -> Path:
    import zlib

    files = {s: {d: str(_questions(tmp_path / f"{s}-{d}.jsonl", d, zlib.crc32(f"{s}-{d}".encode()))) for d in ("alpha", "beta")}
             for s in ("validation", "test")}
    cfg = {
        "base": str(tiny_base),
        "adapters": [{"name": "rs8", "path": str(adapter_set["rs8"]), "domain": "alpha"},
                     {"name": "plain4", "path": str(adapter_set["plain4"]), "domain": "beta"}],
        "density": [0.3, 1.0], "lambda": [1.0, 0.5], "rank": [4],
        "preset": {"density": 0.3, "lambda": 1.0},
        "eval": {"builtin": False, "validation": files["validation"], "test": files["test"], "batch_size": 4},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(path: Path, out: Path, cache: Path, **kw):
    import contextlib

    progress = lambda total, label, unit: contextlib.nullcontext(lambda *a: None)
    return runner_mod.run_sweep(load_sweep_config(path), out, progress=progress, log=lambda m: None,
                                cache_root=cache, **kw)


def _delta(folder: Path) -> dict[str, torch.Tensor]:
    t = load_file(folder / "adapter_model.safetensors")
    out = {}
    for k, a in t.items():
        if ".lora_A." in k:
            out[k.replace(".lora_A.", ".")] = t[k.replace(".lora_A.", ".lora_B.")].double() @ a.double()
    return out


def test_every_point_equals_a_one_off_merge(sweep_yaml, tmp_path):
    run = _run(sweep_yaml, tmp_path / "sw", tmp_path / "cache")
    assert len(run.rows) == 4
    cfg = yaml.safe_load(sweep_yaml.read_text())
    for r in run.rows:
        recipe = {"method": "ties", "parameters": {"density": r["density"], "lambda": r["lambda"]},
                  "adapters": [{"name": a["name"], "path": a["path"]} for a in cfg["adapters"]], "output": {"rank": 4}}
        rpath = tmp_path / f"{r['key']}.yaml"
        rpath.write_text(yaml.safe_dump(recipe))
        res = run_cli("merge", rpath, "-o", tmp_path / f"oneoff-{r['key']}")
        assert res.exit_code == 0, res.output
        got, ref = _delta(tmp_path / "sw" / "points" / r["key"]), _delta(tmp_path / f"oneoff-{r['key']}")
        assert got.keys() == ref.keys()
        for k in ref:  # fp32 SVD rounding: a λ point's factors are scaled from the λ=1 SVD, not recomputed
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5 * float(ref[k].abs().max()))
    # λ scales the merged ΔW: the λ=0.5 point is half the λ=1 point at the same density
    half, full = _delta(tmp_path / "sw" / "points" / "ties-d0.3-l0.5-r4-full"), _delta(tmp_path / "sw" / "points" / "ties-d0.3-l1-r4-full")
    for k in full:
        torch.testing.assert_close(half[k], 0.5 * full[k], rtol=1e-4, atol=1e-6)


def test_outputs_selection_and_test_report(sweep_yaml, tmp_path):
    run = _run(sweep_yaml, tmp_path / "sw", tmp_path / "cache")
    out = tmp_path / "sw"
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out / "sweep.png") as im:
        assert im.size[0] > 400 and im.size[1] > 200
    rows = [json.loads(l) for l in (out / "points.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"validation"}
    best = max(rows, key=lambda r: (r["normalized_mean"], r["accuracy_mean"]))
    assert run.best["normalized_mean"] == best["normalized_mean"]
    best_delta, point_delta = _delta(out / "best"), _delta(out / "points" / run.best["key"])
    assert best_delta.keys() == point_delta.keys()
    assert all(torch.equal(best_delta[k], point_delta[k]) for k in best_delta)  # best/ is that point's adapter
    import csv

    with open(out / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and [r["key"] for r in table if r["selected"] == "True"] == [run.best["key"]]
    assert {r["key"]: float(r["normalized_mean"]) for r in table} == pytest.approx(
        {r["key"]: r["normalized_mean"] for r in rows})
    test = json.loads((out / "test" / "results.json").read_text())
    assert test["split"] == "test" and any(t["name"].startswith("best (") for t in test["targets"])


def test_selection_reads_validation_rows_only():
    rows = [{"key": "a", "split": "validation", "normalized_mean": 0.8, "accuracy_mean": 0.5},
            {"key": "b", "split": "test", "normalized_mean": 0.99, "accuracy_mean": 0.9},
            {"key": "c", "split": "validation", "normalized_mean": 0.9, "accuracy_mean": 0.4, "normalized_worst": 0.1},
            {"key": "d", "split": "validation", "normalized_mean": 0.85, "accuracy_mean": 0.6, "normalized_worst": 0.7}]
    assert select(rows, Metric.normalized_mean)["key"] == "c"
    assert select(rows, Metric.normalized_worst)["key"] == "d"
    assert select(rows, Metric.accuracy_mean)["key"] == "d"


def test_a_failed_sweep_resumes_without_recomputing_finished_points(sweep_yaml, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_row = runner_mod.point_row

    def failing_row(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")
        return real_row(*a, **k)

    monkeypatch.setattr(runner_mod, "point_row", failing_row)
    with pytest.raises(RuntimeError, match="injected"):
        _run(sweep_yaml, tmp_path / "sw", tmp_path / "cache")
    finished = [json.loads(l)["key"] for l in (tmp_path / "sw" / "points.jsonl").read_text().splitlines()]
    assert len(finished) == 2
    monkeypatch.setattr(runner_mod, "point_row", real_row)
    merged, evaluated = [], []
    real_merge = runner_mod.merge_points
    monkeypatch.setattr(runner_mod, "merge_points", lambda cfg, pts, *a, **k: (merged.extend(p.key for p in pts),
                                                                                real_merge(cfg, pts, *a, **k))[1])
    from tiesmerge.sweep.executors import LocalExecutor

    real_map = LocalExecutor.map
    monkeypatch.setattr(LocalExecutor, "map", lambda self, jobs: (evaluated.extend(k for k, _ in jobs),
                                                                   real_map(self, jobs))[1])
    run = _run(sweep_yaml, tmp_path / "sw", tmp_path / "cache2")  # a fresh eval cache: nothing is hidden by it
    assert run.computed == 2 and not set(evaluated) & set(finished) and merged == []
    assert len(run.rows) == 4 and sorted(r["key"] for r in run.rows) == sorted(set(r["key"] for r in run.rows))


def test_a_changed_config_is_refused_without_force(sweep_yaml, tmp_path):
    _run(sweep_yaml, tmp_path / "sw", tmp_path / "cache")
    cfg = yaml.safe_load(sweep_yaml.read_text())
    cfg["density"] = [0.5]
    sweep_yaml.write_text(yaml.safe_dump(cfg))
    with pytest.raises(BadInputError, match="different config.*--force"):
        _run(sweep_yaml, tmp_path / "sw", tmp_path / "cache")
    run = _run(sweep_yaml, tmp_path / "sw", tmp_path / "cache", force=True)
    assert [r["key"] for r in run.rows] == ["ties-d0.5-l1-r4-full", "ties-d0.5-l0.5-r4-full"]


@pytest.mark.parametrize("change, problem", [
    ({"density": [0.0]}, "outside (0, 1]"),
    ({"density": [0.2, 0.2]}, "repeated"),
    ({"adapters": []}, "at least two adapters"),
    ({"metric": "best"}, "metric"),
])
def test_bad_sweep_configs_are_one_line_errors(sweep_yaml, change, problem):
    cfg = {**yaml.safe_load(sweep_yaml.read_text()), **change}
    sweep_yaml.write_text(yaml.safe_dump(cfg))
    with pytest.raises(BadInputError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        load_sweep_config(sweep_yaml)


def test_the_demo_preset_loads():
    cfg = load_sweep_config("demo")
    assert cfg.adapters == "demo" and cfg.base == "smollm2" and cfg.methods == [Method.ties]
    assert cfg.density == sorted(set(cfg.density)) and len(cfg.density) >= 6 and 0.2 in cfg.density
    assert len(cfg.lam) == 3 and 1.0 in cfg.lam


def test_ray_executor_gives_the_same_points_as_local(sweep_yaml, tmp_path):
    ray = pytest.importorskip("ray")
    _run(sweep_yaml, tmp_path / "local", tmp_path / "cache-local")
    try:
        _run(sweep_yaml, tmp_path / "ray", tmp_path / "cache-ray", executor="ray")
    finally:
        ray.shutdown()
    read = lambda d: sorted((json.loads(l) for l in (d / "points.jsonl").read_text().splitlines()), key=lambda r: r["key"])
    assert read(tmp_path / "ray") == read(tmp_path / "local")
    best_ray, best_local = _delta(tmp_path / "ray" / "best"), _delta(tmp_path / "local" / "best")
    assert best_ray.keys() == best_local.keys() and all(torch.equal(best_ray[k], best_local[k]) for k in best_ray)


def test_sweep_command_bad_input_is_exit_2_one_line(tmp_path):
    res = run_cli("sweep", tmp_path / "nope.yaml", "-o", tmp_path / "sw")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and not (tmp_path / "sw").exists()
    res = run_cli("sweep", "demo", "-o", tmp_path / "sw", "--executor", "dask")
    assert res.exit_code == 2 and "--executor 'dask' is unknown" in res.stderr


def test_sweep_command_prints_the_winner(sweep_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("TIESMERGE_CACHE", str(tmp_path / "cache"))
    res = run_cli("sweep", sweep_yaml, "-o", tmp_path / "sw")
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "sw" / "points.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["normalized_mean"], r["accuracy_mean"]))  # the config's metric, then accuracy
    assert f"best (normalized_mean, validation): {best['key']}" in res.stdout
    assert f"* {best['key']}" in res.stdout
