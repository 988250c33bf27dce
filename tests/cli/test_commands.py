"""inspect, validate, --dry-run, methods and examples create: what they print and what they refuse."""

from __future__ import annotations

import json

import yaml

from tests.cli.helpers import run_cli
from tiesmerge.adapters.reader import AdapterReader
from tiesmerge.merge.types import Method


def test_inspect_shows_each_adapter_and_verdict(adapter_set):
    res = run_cli("inspect", adapter_set["rs8"], adapter_set["plain4"], adapter_set["pattern"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "compatible" in out and "14 modules" in out
    for name in ("rs8", "plain4", "pattern"):
        assert name in out
    assert "5.65685" in out  # rs8: 16 / √8
    assert "2–6" in out  # pattern's ranks


def test_inspect_reports_invalid_and_incompatible(adapter_set, tmp_path):
    res = run_cli("inspect", adapter_set["rs8"], tmp_path / "missing")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    other = tmp_path / "other"
    other.mkdir()
    for f in adapter_set["rs8"].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((other / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "another/base"
    (other / "adapter_config.json").write_text(json.dumps(cfg))
    res = run_cli("inspect", adapter_set["rs8"], other)
    assert res.exit_code == 2 and "incompatible set" in res.stderr
    assert run_cli("inspect", adapter_set["rs8"], other, "--allow-base-mismatch").exit_code == 0


def test_validate_and_dry_run_write_nothing(adapter_set, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"adapters": [{"name": "a", "path": str(adapter_set["rs8"])},
                                                    {"name": "b", "path": str(adapter_set["plain4"]), "weight": 0.5}],
                                      "parameters": {"density": 0.3}, "output": {"rank": 4}}))
    res = run_cli("validate", recipe)
    assert res.exit_code == 0 and "valid recipe" in res.output and "rank 4" in res.output
    out = tmp_path / "out"
    res = run_cli("merge", recipe, "-o", out, "--dry-run")
    assert res.exit_code == 0 and "dry run: nothing written" in res.output
    assert "method: ties" in res.output and "parameters: {'density': 0.3" in res.output
    assert "  a: weight 1.0, r 8" in res.output and "  b: weight 0.5, r 4" in res.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_methods_lists_every_method():
    res = run_cli("methods")
    assert res.exit_code == 0
    for m in Method:
        assert m.value[:12] in res.output


def test_no_output_is_an_error(adapter_set):
    res = run_cli("merge", "--adapter", f"a={adapter_set['rs8']}")
    assert res.exit_code == 2 and "-o DIR" in res.stderr


def test_examples_create_writes_a_mergeable_set(tmp_path):
    out = tmp_path / "ex"
    res = run_cli("examples", "create", out, "--shape", "tiny", "--rank", "4", "--name", "a", "--name", "b",
                  "--dtype", "bfloat16")
    assert res.exit_code == 0, res.output
    reader = AdapterReader(out / "a", "a")
    assert len(reader.modules) == 14 and {m.rank for m in reader.modules.values()} == {4}
    assert reader.modules["model.layers.0.mlp.down_proj"].shape == (64, 128)
    merged = tmp_path / "merged"
    res = run_cli("merge", out / "recipe.yaml", "-o", merged)
    assert res.exit_code == 0, res.output
    report = json.loads((merged / "merge_report.json").read_text())
    assert report["summary"]["rank_max"] == 4
    assert 0 < report["summary"]["sign_conflict_rate_mean"] < 0.5
    assert res.exit_code == 0 and run_cli("examples", "create", out).exit_code == 2  # exists, no --force
