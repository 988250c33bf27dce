"""The demo and sweep configs hold the recipe's line on types and ranges: a boolean is not a number, and λ comes
from its declaration (finite, within ±1e4) — one line each, before any work."""

from __future__ import annotations

import pytest
import yaml

from tests.cli.helpers import run_cli
from tiesmerge.demo.config import DemoConfig


@pytest.mark.parametrize("bad, needle", [({"rank": True}, "rank: expected a number"),
                                         ({"refine_steps": False}, "refine_steps: expected a number"),
                                         ({"lambda": 1e308}, r"lambda 1e\+308 is outside"),
                                         ({"subspace_lambda": 2e4}, "lambda 20000 is outside")])
def test_demo_config_refuses_bools_and_absurd_lambdas(bad, needle):
    with pytest.raises(ValueError, match=needle):
        DemoConfig.model_validate(bad)


@pytest.mark.parametrize("change, needle", [({"lambda": [1e308]}, "lambda 1e+308 is outside"),
                                            ({"rank": [True]}, "rank: expected numbers"),
                                            ({"eval": {"batch_size": True}}, "batch_size: expected a number")])
def test_sweep_config_refuses_them_too(tmp_path, change, needle):
    cfg = {"adapters": [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}], **change}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli("sweep", tmp_path / "s.yaml", "-o", tmp_path / "out")
    assert res.exit_code == 2 and needle in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_the_demo_never_writes_over_its_cache(tmp_path):
    cache = tmp_path / "cache"
    (cache / "demo" / "specialists").mkdir(parents=True)
    for out in (cache, cache / "demo", tmp_path):
        res = run_cli("demo", "-o", out, "--force", env={"TIESMERGE_CACHE": str(cache)})
        assert res.exit_code == 2 and "overlaps the tiesmerge cache" in res.stderr, res.stderr
    assert (cache / "demo" / "specialists").is_dir()


def test_the_demo_scores_in_bf16_only_where_bf16_is_fast(monkeypatch):
    """eval_dtype auto: bfloat16 on a CPU with AVX-512 BF16 (the probe says so), float32 on one without (bf16 is
    emulated there: slower, not faster); an explicit dtype is kept; an unknown one is refused at load."""
    import torch

    from tiesmerge.eval.models import scoring_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert scoring_dtype("auto", "auto") == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert scoring_dtype("auto", "auto") == "float32"
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)  # an older torch without the probe
    assert scoring_dtype("auto", "auto") == "float32"
    assert scoring_dtype("float32", "auto") == "float32" and scoring_dtype("bfloat16", "cpu") == "bfloat16"
    assert DemoConfig().eval_dtype == "auto"
    with pytest.raises(ValueError, match="eval_dtype"):
        DemoConfig.model_validate({"eval_dtype": "float16"})
