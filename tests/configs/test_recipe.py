"""Recipe models: trim/density, defaults, relative paths, the shipped preset, flag overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tiesmerge.api.recipes import build_recipe, parse_adapter_flag
from tiesmerge.cli.recipe_flags import adapters_from_flags
from tiesmerge.configs import load_recipe, preset_path, recipe_from_dict
from tiesmerge.errors import BadInputError
from tiesmerge.merge.types import Method, SignRule

pytestmark = pytest.mark.core


def _recipe(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_trim_is_stored_as_density(tmp_path):
    r = load_recipe(_recipe(tmp_path, {"parameters": {"trim": 0.2}, "adapters": [{"path": "a", "trim": 0.9}]}))
    assert r.parameters.density == pytest.approx(0.8)
    assert r.adapters[0].density == pytest.approx(0.1)
    assert "trim" not in r.parameters.model_dump()


def test_defaults_and_relative_paths(tmp_path):
    r = load_recipe(_recipe(tmp_path, {"adapters": [{"path": "sub/math"}, {"name": "x", "path": "/abs/code", "weight": 2}]}))
    assert r.method is Method.ties and r.parameters.sign is SignRule.sum and r.parameters.lam == 1.0
    assert r.adapters[0].name == "math" and r.adapters[0].path == (tmp_path / "sub/math").resolve()
    assert r.adapters[1].path == Path("/abs/code") and r.adapters[1].weight == 2
    assert r.output.rank == "auto" and r.output.energy == 0.99 and r.output.max_rank is None


def test_recipe_is_frozen(tmp_path):
    r = load_recipe(_recipe(tmp_path, {"adapters": [{"path": "a"}]}))
    with pytest.raises(ValidationError, match="frozen"):
        r.parameters.density = 0.5


def test_preset_four_specialists():
    r = load_recipe(preset_path("four_specialists"))
    assert [a.name for a in r.adapters] == ["math", "code", "stem", "humanities"]
    assert all(a.weight == 0.25 for a in r.adapters)
    assert r.method is Method.ties and r.output.rank == 128 and r.parameters.density == 0.2
    with pytest.raises(BadInputError, match="available: four_specialists"):
        preset_path("nope")


@pytest.mark.parametrize("spec,want", [
    ("math=./m:0.25", {"name": "math", "path": "./m", "weight": 0.25}),
    ("./m", {"path": "./m"}),
    ("code=/x/y", {"name": "code", "path": "/x/y"}),
    ("c=C:/win/path", {"name": "c", "path": "C:/win/path"}),
    ("c=/p:1e-1", {"name": "c", "path": "/p", "weight": 0.1}),
])
def test_parse_adapter_flag(spec, want):
    assert parse_adapter_flag(spec) == want


def test_flags_override_recipe_and_replace_trim(tmp_path):
    path = _recipe(tmp_path, {"parameters": {"trim": 0.2}, "adapters": [{"path": "a"}], "output": {"rank": 8}})
    r = build_recipe(path, density=0.3, rank="full", method=None)
    assert r.parameters.density == 0.3 and r.parameters.given().get("trim") is None and r.output.rank == "full"
    with pytest.raises(BadInputError, match="not both"):
        build_recipe(path, adapters=adapters_from_flags(path, ["x=/y"]))
    with pytest.raises(BadInputError, match="give a recipe"):
        adapters_from_flags(None, [])
    with pytest.raises(BadInputError, match="no adapters"):
        build_recipe(None)


def test_della_epsilon_range_checked():
    with pytest.raises(BadInputError, match="DELLA"):
        recipe_from_dict({"method": "della", "parameters": {"density": 0.1, "epsilon": 0.2}, "adapters": [{"path": "a"}]},
                         "t", Path("."))
