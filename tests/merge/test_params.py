"""Merge parameters are declared once (merge/params.py, or the method's own file): the recipe, `tiesmerge methods`,
the kernels and the sweep grid all read the declaration. A method with a parameter of its own needs no edit beyond
its file and its registry row — shown here by registering a toy method with a new parameter."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from tests.cli.helpers import run_cli
from tests.cli.test_core_install import read_adapter, write_adapter
from tiesmerge.merge import registry
from tiesmerge.merge.params import CORE, DENSITY, LAMBDA, ParamDef
from tiesmerge.merge.spec import MethodSpec
from tiesmerge.merge.types import MergeOutput, MergeStats, Method, MethodParams, SignRule

pytestmark = pytest.mark.core

# -- the toy method's whole file -------------------------------------------------------------------------------
POWER = ParamDef("power", float, 2.0, "toy: each merged entry is sign(x)·|x|^power", 0.5, 4)


def toy(deltas: torch.Tensor, p: MethodParams) -> MergeOutput:
    total = sum(w * d for w, d in zip(p.weights, deltas))
    return MergeOutput(p.lam * total.sign() * total.abs() ** p.option(POWER), MergeStats())


# -- … and its registry row ------------------------------------------------------------------------------------
TOY_ROW = MethodSpec(Method.tsv, toy, "toy: signed power of the weighted sum", "(test)", (POWER, LAMBDA))


@pytest.fixture()
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, Method.tsv, TOY_ROW)


def test_a_new_parameter_flows_from_its_declaration_to_the_kernel(toy_registered, tmp_path):
    a = write_adapter(tmp_path / "a", seed=1, r=4, alpha=8, rslora=False)
    b = write_adapter(tmp_path / "b", seed=2, r=4, alpha=8, rslora=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: tsv\nparameters: {power: 3, lambda: 0.5}\nadapters:\n - {name: a, path: a}\n"
                      " - {name: b, path: b}\noutput: {rank: full}\n")
    res = run_cli("merge", recipe, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    got = read_adapter(tmp_path / "out")
    for name in a:
        total = a[name] + b[name]
        assert_close(got[name], 0.5 * total.sign() * total.abs() ** 3, rtol=1e-4, atol=1e-6)
    listing = run_cli("methods").stdout
    assert "power (float, [0.5, 4], default 2): toy: each merged entry" in listing


@pytest.mark.parametrize("value, needle", [(5, "power 5 is outside [0.5, 4]"), (True, "power must be a number, got True"),
                                           ("x", "power must be a number, got 'x'")])
def test_its_range_and_type_come_from_the_declaration(toy_registered, tmp_path, value, needle):
    write_adapter(tmp_path / "a", seed=1, r=4, alpha=8, rslora=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: tsv\nparameters: {{power: {str(value).lower()}}}\nadapters: [{{path: a}}]\n")
    res = run_cli("validate", recipe)
    assert res.exit_code == 2 and f"parameters.power: {needle}" in res.stderr, res.stderr


def test_a_parameter_of_another_method_is_refused_by_name(tmp_path):
    write_adapter(tmp_path / "a", seed=1, r=4, alpha=8, rslora=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: ties\nparameters: {common_fraction: 0.5}\nadapters: [{path: a}]\n")
    res = run_cli("validate", recipe)
    assert res.exit_code == 2 and "common_fraction do not apply to method ties" in res.stderr
    recipe.write_text("method: ties\nparameters: {densty: 0.5}\nadapters: [{path: a}]\n")
    res = run_cli("validate", recipe)
    assert res.exit_code == 2 and "unknown parameter 'densty'" in res.stderr


def test_every_declared_parameter_is_unique_and_checks_its_own_default():
    known = registry.known_parameters()
    assert set(CORE) <= set(known.values())
    for definition in known.values():
        assert definition.check(definition.default) == definition.default
        assert definition.describe().startswith(definition.name)
    assert known["common_fraction"].default == 0.8 and known["off_diagonal"].default == 1.0


@pytest.mark.parametrize("definition, value, ok", [
    (DENSITY, 1.0, True), (DENSITY, 0.0, False), (DENSITY, 1.0000001, False), (DENSITY, math.nan, False),
    (LAMBDA, -1e4, True), (LAMBDA, 1e308, False), (LAMBDA, math.inf, False), (LAMBDA, "1e-3", True),
])
def test_ranges_are_enforced_at_their_edges(definition, value, ok):
    if ok:
        assert definition.check(value) == float(value)
    else:
        with pytest.raises(ValueError):
            definition.check(value)


def test_enum_parameters_take_their_values():
    from tiesmerge.merge.params import SIGN

    assert SIGN.check("count") is SignRule.count
    with pytest.raises(ValueError, match="sign must be one of sum, count"):
        SIGN.check("majority")
