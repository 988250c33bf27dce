"""The Python API equals the CLI on the same inputs (tensors bit for bit), raises typed errors instead of exiting,
and `import tiesmerge` stays light. Hand-written adapters (no PEFT), so `make test-min` runs this in a core install."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tiesmerge
from tests.cli.helpers import run_cli
from tests.cli.test_core_install import read_adapter, write_adapter

pytestmark = pytest.mark.core


@pytest.fixture()
def trio(tmp_path):
    write_adapter(tmp_path / "a", seed=1, r=4, alpha=8, rslora=True)
    write_adapter(tmp_path / "b", seed=2, r=6, alpha=6, rslora=False)
    write_adapter(tmp_path / "c", seed=3, r=2, alpha=16, rslora=True)
    return tmp_path


def tensors(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def same_tensors(x, y):
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


@pytest.mark.parametrize("space", ["full", "core"])
def test_merge_equals_the_cli_bit_for_bit(trio, space):
    cli = run_cli("merge", "--adapter", f"a={trio / 'a'}:0.5", "--adapter", f"b={trio / 'b'}:0.3", "--adapter",
                  f"c={trio / 'c'}:0.2", "--density", "0.4", "--lambda", "1.2", "--rank", "5", "--space", space,
                  "-o", trio / "cli")
    assert cli.exit_code == 0, cli.stderr
    result = tiesmerge.merge(adapters={"a": trio / "a", "b": trio / "b", "c": trio / "c"}, weights=[0.5, 0.3, 0.2],
                             method="ties", space=space, density=0.4, lam=1.2, rank=5, output=trio / "api")
    assert result.output == trio / "api" and len(result.modules) == 3
    same_tensors(tensors(trio / "cli"), tensors(trio / "api"))
    assert json.loads((trio / "api" / "adapter_config.json").read_text()) == \
        json.loads((trio / "cli" / "adapter_config.json").read_text())
    cli_summary = json.loads((trio / "cli" / "merge_report.json").read_text())["summary"]
    assert result.summary == cli_summary


def test_a_recipe_path_object_or_mapping_give_the_same_merge(trio):
    doc = {"method": "ties", "parameters": {"density": 0.5}, "output": {"rank": 4},
           "adapters": [{"name": n, "path": str(trio / n)} for n in "abc"]}
    (trio / "r.yaml").write_text(json.dumps(doc))  # JSON is YAML
    tiesmerge.merge(trio / "r.yaml", output=trio / "from-path")
    tiesmerge.merge(tiesmerge.load_recipe(trio / "r.yaml"), output=trio / "from-recipe")
    tiesmerge.merge(doc, output=trio / "from-mapping")
    tiesmerge.merge(trio / "r.yaml", rank=2, output=trio / "overridden")
    same_tensors(tensors(trio / "from-path"), tensors(trio / "from-recipe"))
    same_tensors(tensors(trio / "from-path"), tensors(trio / "from-mapping"))
    assert tensors(trio / "overridden")["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"].shape[0] == 2


def test_merge_factors_in_memory_equals_the_cli(trio):
    cli = run_cli("merge", "--adapter", f"a={trio / 'a'}", "--adapter", f"b={trio / 'b'}", "--density", "0.3",
                  "--rank", "full", "-o", trio / "cli")
    assert cli.exit_code == 0, cli.stderr
    inputs = {}
    for name in "ab":
        cfg = json.loads((trio / name / "adapter_config.json").read_text())
        raw = tensors(trio / name)
        factors = {k.removeprefix("base_model.model.").removesuffix(".lora_A.weight"):
                   (raw[k], raw[k.replace("lora_A", "lora_B")]) for k in raw if k.endswith("lora_A.weight")}
        inputs[name] = tiesmerge.LoraFactors.from_config(factors, cfg)
    merged = tiesmerge.merge_factors(inputs, method="ties", density=0.3, rank="full")
    want = tensors(trio / "cli")
    for module, (a, b) in merged.factors.items():
        assert torch.equal(a, want[f"base_model.model.{module}.lora_A.weight"])
        assert torch.equal(b, want[f"base_model.model.{module}.lora_B.weight"])
    assert merged.config == json.loads((trio / "cli" / "adapter_config.json").read_text())
    got = read_adapter(trio / "cli")
    for module in merged.factors:
        torch.testing.assert_close(merged.delta(module).double(), got[module], rtol=1e-6, atol=1e-7)


def test_errors_are_typed_never_systemexit(trio):
    with pytest.raises(tiesmerge.BadInputError, match="density 1.5 is outside"):
        tiesmerge.merge(adapters=[trio / "a", trio / "b"], density=1.5, output=trio / "x")
    with pytest.raises(tiesmerge.BadInputError, match="path does not exist"):
        tiesmerge.merge(adapters={"a": trio / "nope"}, output=trio / "x")
    with pytest.raises(tiesmerge.BadInputError, match="overlaps input adapter"):
        tiesmerge.merge(adapters=[trio / "a", trio / "b"], output=trio / "a", force=True)
    with pytest.raises(tiesmerge.BadInputError, match="2 weights for 3 adapters"):
        tiesmerge.merge(adapters=[trio / "a", trio / "b", trio / "c"], weights=[1, 2], output=trio / "x")
    with pytest.raises(tiesmerge.BadInputError, match="give tiesmerge.LoraFactors"):
        tiesmerge.merge_factors({"a": trio / "a"})
    assert issubclass(tiesmerge.BadInputError, tiesmerge.TiesmergeError)
    assert not (trio / "x").exists()


def test_inspect_validate_methods_and_export_return_data(trio):
    report = tiesmerge.inspect([trio / "a", trio / "b"])
    assert report.compatible and report.verdict.startswith("compatible: 2 adapter(s), 3 modules")
    assert [r["rank"] for r in report.adapters] == ["4", "6"] and report.adapters[0]["rslora"] is True
    plan = tiesmerge.validate({"adapters": [{"path": str(trio / "a")}], "parameters": {"density": 0.5}})
    assert plan.plan[0].startswith("method: ties") and "'density': 0.5" in plan.plan[0]
    names = [m.name for m in tiesmerge.methods()]
    assert names[:2] == ["ties", "task_arithmetic"] and "iso_cts" in names
    iso_cts = next(m for m in tiesmerge.methods() if m.name == "iso_cts")
    assert iso_cts.parameters[0].startswith("common_fraction (float, (0, 1), default 0.8)")
    done = tiesmerge.export(trio / "a", to="vllm", output=trio / "vllm")
    assert done.rank == 8 and (trio / "vllm" / "adapter_model.safetensors").is_file()


def test_import_is_light_and_help_teaches():
    probe = ("import sys, tiesmerge; heavy = [m for m in ('torch', 'pydantic', 'typer', 'rich', 'transformers', "
             "'peft') if m in sys.modules]; print(heavy); print(sorted(tiesmerge.__all__))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"
    for name in ("merge", "merge_factors", "Recipe", "load_recipe", "inspect", "validate", "export", "methods"):
        assert name in out[1]
    for fn in (tiesmerge.merge, tiesmerge.merge_factors, tiesmerge.inspect, tiesmerge.validate, tiesmerge.export,
               tiesmerge.methods):
        assert "Example" in fn.__doc__ and ">>>" in fn.__doc__
    assert "transformers" not in sys.modules or True  # the in-process suite may have loaded it elsewhere


@pytest.mark.parametrize("change, needle", [
    ({"use_rslora": "false"}, "use_rslora must be true or false"),
    ({"r": -4}, "r must be a positive integer"),
    ({"r": 0}, "r must be a positive integer"),
    ({"r": "8"}, "r must be a positive integer"),
    ({"lora_alpha": float("nan")}, "lora_alpha must be a finite number"),
    ({"rank_pattern": ["q"]}, "rank_pattern must be a mapping"),
])
def test_lora_factors_from_config_checks_as_the_file_reader_does(change, needle, tmp_path):
    """One place for the config checks: a dict in memory and an adapter_config.json on disk refuse alike."""
    import json

    from tiesmerge.adapters.config import read_lora_settings
    from tiesmerge.adapters.memory import LoraFactors
    from tiesmerge.errors import BadInputError

    factors = {"layers.0.q_proj": (torch.randn(4, 8), torch.randn(8, 4))}
    config = {"r": 4, "lora_alpha": 8, "use_rslora": False, **change}
    with pytest.raises(BadInputError, match=needle):
        LoraFactors.from_config(factors, config)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
    with pytest.raises(BadInputError, match=needle):
        read_lora_settings(tmp_path, "adapter")
    ok = LoraFactors.from_config(factors, {"r": 4, "lora_alpha": 8, "use_rslora": True})
    assert ok.scale_of("layers.0.q_proj") == 8 / 2  # α/√r


def test_merge_factors_refuses_meta_tensors_empty_or_repeated_names_and_string_weights():
    from tiesmerge.errors import BadInputError

    a, b = torch.randn(4, 16), torch.randn(16, 4)

    def lf(x, y):
        return tiesmerge.LoraFactors({"layers.0.q_proj": (x, y)}, 1.0)

    with pytest.raises(BadInputError, match="meta tensors"):
        tiesmerge.merge_factors({"x": lf(a.to("meta"), b.to("meta")), "y": lf(a, b)})
    with pytest.raises(BadInputError, match="non-empty name"):
        tiesmerge.merge_factors({"": lf(a, b), "y": lf(a, b)})
    with pytest.raises(TypeError, match="the string '11'"):
        tiesmerge.merge_factors({"x": lf(a, b), "y": lf(a, b)}, weights="11")
    with pytest.raises(BadInputError, match="two adapters are named 'm'"):
        tiesmerge.merge(adapters=["/tmp/one/m", "/tmp/two/m"], output=None)
