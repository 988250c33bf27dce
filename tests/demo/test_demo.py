"""`tiesmerge demo` on the tiny base: tables from real evaluations, keyed caching, and the specialisation checks."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from tests.cli.helpers import run_cli
from tiesmerge.demo import table
from tiesmerge.demo.config import DemoConfig
from tiesmerge.demo.pipeline import run_demo
from tiesmerge.eval.builtin.build import build
from tiesmerge.eval.models import attach_adapters, load_base
from tiesmerge.eval.report import EvalResult, Target
from tiesmerge.eval.run import SCORERS
from tiesmerge.eval.scoring import Prediction


@contextlib.contextmanager
def _silent(total, label, unit):
    yield lambda done, t, name: None


def _config(base, **kw):
    data = {"base": str(base), "domains": ["math", "humanities"], "n_per_domain": 20, "limit": 4, "batch_size": 3,
            "rank": 2, "density": 0.5, "train": {"steps": 2, "rank": 2, "alpha": 4, "batch_size": 2, "lr": 1e-2},
            "refine_steps": 2, "refine_prompts": 4, "eval_dtype": "float32"}  # compared with PEFT's float32 loader
    data.update(kw)
    return DemoConfig.model_validate(data)


def test_demo_runs_caches_and_rebuilds_only_what_changed(tiny_base, tmp_path):
    logs: list[str] = []
    cfg = _config(tiny_base)
    assert cfg.mode == "cloze"
    first = run_demo(cfg, tmp_path / "out1", force=False, progress=_silent, log=logs.append, cache_root=tmp_path / "c")
    names = [t.name for t in first.result.targets]
    assert names == ["base", "math", "humanities", "ties", "task_arithmetic", "iso_c", "refine", "peft_ties_svd",
                     "peft_ties_svd_fixed"]
    assert not any(first.cached.values()) and sum("trained" in m for m in logs) == 2
    # the subspace row: Iso-C in core space at the exact rank Σ r with unit weights
    iso = json.loads(open(first.paths["merge iso_c"] + "/merge_report.json").read())
    assert iso["recipe"]["space"] == "core" and iso["recipe"]["method"] == "iso_c"
    assert iso["recipe"]["output"]["rank"] == 2 * cfg.train.rank
    assert {a["weight"] for a in iso["recipe"]["adapters"]} == {1.0}
    # the refined row: the closest data-free merge refined on 4 train prompts per specialist, its rank, scale 1
    refined = json.loads(open(first.paths["merge refine"] + "/refine_report.json").read())
    choice = refined["start_choice"]  # the data-free merge closest to the specialists on held-out prompts
    assert [c["start"] for c in choice] == [first.paths[f"merge {m}"] for m in ("ties", "task_arithmetic", "iso_c")]
    best = min(choice, key=lambda c: c["objective"])
    assert refined["start"] == best["start"] and best["chosen"] and refined["prompts"] == {"math": 4, "humanities": 4}
    # chosen on the built-in validation split (2 per domain at n_per_domain 20), never below its start there
    v = refined["validation"]
    assert set(v["start"]) == {"math", "humanities"} and sum(v["best"].values()) >= sum(v["start"].values())
    cfg_out = json.loads(open(first.paths["merge refine"] + "/adapter_config.json").read())
    start_cfg = json.loads(open(best["start"] + "/adapter_config.json").read())
    assert cfg_out["r"] == cfg_out["lora_alpha"] == start_cfg["r"] and not cfg_out["use_rslora"]
    assert cfg_out["rank_pattern"] == start_cfg["rank_pattern"]

    # the cached, fused-weight evaluation of a merge equals scoring the saved adapter through PEFT's loader
    questions = [q for d in cfg.domains for q in build(20, 0, domains=cfg.domains)["test"][d][:4]]
    model, tok = load_base(str(tiny_base), device="cpu")
    peft = attach_adapters(model, {"ties": first.paths["merge ties"]})
    direct = SCORERS[cfg.mode](peft, tok, questions, batch_size=1)
    assert [p.predicted for p in direct] == [p.predicted for p in first.result.predictions["ties"]]
    saved = json.loads((tmp_path / "out1" / "results.json").read_text())
    ties_cells = {c["domain"]: c["correct"] for c in saved["cells"] if c["target"] == "ties"}
    assert ties_cells == {d: sum(p.correct for p in direct if p.domain == d) for d in cfg.domains}
    assert "| model |" in (tmp_path / "out1" / "results.md").read_text()
    assert first.result.meta["dtype"] == "float32"  # the scoring dtype is recorded with the results

    # PEFT's corrected ties_svd has TIES's ΔW, so it takes TIES's predictions unscored — and scoring it
    # through PEFT's loader gives exactly those predictions. PEFT < 0.21 applied each adapter's scaling twice in
    # the svd combinations (fixed in 0.21): there the corrected row is a different ΔW and is scored on its own.
    from peft import __version__ as peft_version

    if tuple(int(x) for x in peft_version.split(".")[:2]) >= (0, 21):
        assert first.result.meta["same_as"] == {"peft_ties_svd_fixed": "ties"}
        assert first.result.meta["peft_fixed_vs_ties_delta_distance"] < 1e-4
        assert any("takes TIES's predictions" in m for m in logs)
        want = [p.predicted for p in direct]
    else:
        assert first.result.meta["same_as"] == {}
        assert first.result.meta["peft_fixed_vs_ties_delta_distance"] > 0.1
        want = [p.predicted for p in first.result.predictions["peft_ties_svd_fixed"]]
    fixed = attach_adapters(load_base(str(tiny_base), device="cpu")[0], {"fx": first.paths["merge peft_ties_svd_fixed"]})
    assert [p.predicted for p in SCORERS[cfg.mode](fixed, tok, questions, batch_size=2)] == want

    # same config: everything is read back, nothing trained or scored
    logs.clear()
    second = run_demo(cfg, tmp_path / "out2", force=False, progress=_silent, log=logs.append, cache_root=tmp_path / "c")
    assert all(second.cached.values()) and not any("trained" in m for m in logs)
    assert second.paths == {**first.paths, "results": str(tmp_path / "out2")}
    for t in names:
        assert [p.predicted for p in second.result.predictions[t]] == [p.predicted for p in first.result.predictions[t]]

    # a new density rebuilds the two density-dependent merges only
    logs.clear()
    third = run_demo(_config(tiny_base, density=0.3), tmp_path / "out3", force=False, progress=_silent,
                     log=logs.append, cache_root=tmp_path / "c")
    assert not any("trained" in m for m in logs)
    assert third.paths["merge task_arithmetic"] == first.paths["merge task_arithmetic"]
    assert third.paths["merge ties"] != first.paths["merge ties"]
    assert third.paths["merge peft_ties_svd"] != first.paths["merge peft_ties_svd"]
    assert {t for t, hit in third.cached.items() if not hit} <= {"ties", "peft_ties_svd", "peft_ties_svd_fixed"}
    card = json.loads(open(first.paths["merge peft_ties_svd"] + "/merge_card.json").read())
    assert card["saved_r"] == 2 and card["density"] == 0.5


def _result(acc: dict[str, dict[str, range]], n: int = 100) -> EvalResult:
    """An EvalResult in which each (target, domain) gets exactly the questions numbered in the range right."""
    preds = {}
    for target, cells in acc.items():
        preds[target] = [Prediction(f"{d}{i}", d, "A" if i in right else "B", "A", None, 0.0)
                         for d, right in cells.items() for i in range(n)]
    targets = [Target("base", "base")] + [Target(t, "adapter") for t in acc if t != "base"]
    return EvalResult(targets, ["code", "math"], preds, {"math": "math", "code": "code"})


def test_specialist_checks_need_a_paired_gain_beyond_its_interval_and_the_largest_own_gain():
    res = _result({"base": {"math": range(25), "code": range(25)},
                   "math": {"math": range(45), "code": range(30)},       # +20 own (20 won, 0 lost), +5 other → ok
                   "code": {"math": range(40), "code": range(10, 35)}})  # +10 own (won 10, lost 10), +15 on math
    checks = {c.domain: c for c in table.specialist_checks(res)}
    m, c = checks["math"], checks["code"]
    assert m.ok and m.own_gain == pytest.approx(0.20) and m.best_other_gain == pytest.approx(0.05)
    # by hand: b = 20, c = 0, n = 100 → half-width 1.96·√(20 − 400/100)/100 = 0.0784
    assert m.gain_ci95 == pytest.approx((0.20 - 0.0784, 0.20 + 0.0784), abs=1e-4) and m.intervals_apart
    # code: b = 10 (25..34), c = 10 (0..9) → gain 0, half-width 1.96·√20/100 = 0.0877
    assert c.own_gain == pytest.approx(0.0) and c.gain_ci95 == pytest.approx((-0.0877, 0.0877), abs=1e-4)
    assert not c.beats_base and not c.specialised and not c.ok and not c.intervals_apart
    # a paired gain can clear its interval while the two accuracies' own intervals still overlap
    res = _result({"base": {"math": range(25), "code": range(25)}, "math": {"math": range(37), "code": range(25)},
                   "code": {"math": range(25), "code": range(40)}})
    m = {c.domain: c for c in table.specialist_checks(res)}["math"]
    assert m.beats_base and not m.intervals_apart and m.ok  # 12 won, 0 lost: half-width 1.96·√(12 − 1.44)/100 = 0.0637
    lines = table.check_lines([m])
    assert "paired 95% CI +5.6 to +18.4" in lines[0] and "still overlap" in lines[0] and lines[0].endswith("→ ok")
    header, rows = table.matrix_rows(res)
    assert header == ["model", "code", "math", "mean"] and rows[1][2].startswith("37.0*")


def test_demo_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "demo.yaml"
    bad.write_text("domains: [math, poetry]\n")
    res = run_cli("demo", "--config", bad, "-o", tmp_path / "o")
    assert res.exit_code == 2 and "poetry" in res.stderr and "\n" not in res.stderr.strip()
    bad.write_text("train: {steps: 0}\n")
    res = run_cli("demo", "--config", bad, "-o", tmp_path / "o")
    assert res.exit_code == 2 and "train.steps" in res.stderr
    bad.write_text("train_overrides: {math: {stepz: 3}}\n")
    res = run_cli("demo", "--config", bad, "-o", tmp_path / "o")
    assert res.exit_code == 2 and "stepz" in res.stderr


def test_peft_fixed_variant_has_scaling_one_and_the_same_delta(tiny_base, adapter_set, tmp_path):
    """PEFT's saved ties_svd is √r too strong (use_rslora kept with α = r); the fixed copy is not."""
    from tests.conftest import peft_deltas
    from tiesmerge.cache import adapter_digest
    from tiesmerge.demo.merges import peft_scaling_fixed, peft_ties_svd

    cfg = _config(tiny_base, rank=4)
    adapters = {n: adapter_set[n] for n in ("rs8", "rs16")}
    digests = {n: adapter_digest(p) for n, p in adapters.items()}
    raw, _ = peft_ties_svd(cfg, adapters, digests, lambda m: None, root=tmp_path)
    fixed, _ = peft_scaling_fixed(raw, root=tmp_path)
    assert json.loads((raw / "adapter_config.json").read_text())["use_rslora"] is True
    d_raw, d_fixed = peft_deltas(tiny_base, raw), peft_deltas(tiny_base, fixed)
    for name, delta in d_fixed.items():
        torch.testing.assert_close(d_raw[name], delta * 2.0, atol=1e-6, rtol=1e-5)  # √4 = 2


def test_delta_distance_sees_through_the_factorisation(adapter_set, tmp_path):
    """Equal ΔW with different factors (a rotated rank basis) → ~0; another adapter → far; other modules → inf."""
    import shutil

    from safetensors.torch import load_file, save_file

    from tiesmerge.demo.merges import delta_distance

    src = adapter_set["rs8"]
    rotated = tmp_path / "rotated"
    shutil.copytree(src, rotated)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    g = torch.Generator().manual_seed(0)
    for key in [k for k in tensors if "lora_A" in k]:
        a, b_key = tensors[key], key.replace("lora_A", "lora_B")
        q, _ = torch.linalg.qr(torch.randn(a.shape[0], a.shape[0], generator=g, dtype=torch.float64))
        tensors[key] = (q.T @ a.double()).float().contiguous()  # B·A = (B·Q)(Qᵀ·A)
        tensors[b_key] = (tensors[b_key].double() @ q).float().contiguous()
    save_file(tensors, str(rotated / "adapter_model.safetensors"))
    assert delta_distance(rotated, src) < 1e-5
    assert not torch.equal(load_file(str(rotated / "adapter_model.safetensors"))[key], load_file(
        str(src / "adapter_model.safetensors"))[key])
    assert delta_distance(adapter_set["rs16"], src) > 0.1
    fewer = tmp_path / "fewer"
    shutil.copytree(src, fewer)
    save_file({k: v for k, v in tensors.items() if "layers.0." in k}, str(fewer / "adapter_model.safetensors"))
    assert delta_distance(fewer, src) == float("inf")
