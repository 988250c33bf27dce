"""Merge parameters, each declared once (mergekit's ConfigParameterDef): its recipe name, type, range, default and
help. A method lists the ParamDefs it reads in its registry row; the recipe's `parameters:` are checked against
them at load, and `tiesmerge methods`, the CLI flags' help and the sweep grid read them from here.

Parameters several methods share are below; one a single method reads lives in that method's file (Iso-CTS's
`common_fraction`, RegMean's `off_diagonal`), so a new method with a new parameter is one file and one registry
row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tiesmerge.merge.types import SignRule


@dataclass(frozen=True)
class ParamDef:
    name: str  # the recipe key (`lambda`, `density`, …)
    kind: type  # float, int, bool or an Enum
    default: Any  # None: the method's own behaviour (said in `help`)
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range is (low, …] rather than [low, …]
    high_open: bool = False
    per_adapter: bool = False  # may also be set per adapter (adapters[].density)

    @property
    def range(self) -> str:
        if self.low is None and self.high is None:
            return ""
        lo = "-∞" if self.low is None else f"{self.low:g}"
        hi = "∞" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"

    def describe(self) -> str:
        """One line for `tiesmerge methods` and --help: name, type, range, default, help."""
        kind = self.kind.__name__ if not issubclass(self.kind, Enum) else "|".join(m.value for m in self.kind)
        bits = [kind, self.range, f"default {_show(self.default)}" if self.default is not None else ""]
        return f"{self.name} ({', '.join(b for b in bits if b)}): {self.help}"

    def check(self, value: Any) -> Any:
        """The value converted to this parameter's type, or ValueError naming the problem (booleans are not
        numbers here, NaN / ±inf are refused, the range is enforced)."""
        if value is None:
            return None
        if issubclass(self.kind, Enum):
            try:
                return self.kind(value)
            except ValueError:
                raise ValueError(f"{self.name} must be one of {', '.join(m.value for m in self.kind)}, "
                                 f"got {value!r}") from None
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool):
            raise ValueError(f"{self.name} must be a number, got {value!r}")
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{self.name} must be a number, got {value!r}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        if self.kind is int:
            if value != int(value):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not self.in_range(value):
            raise ValueError(f"{self.name} {value:g} is outside {self.range}")
        return value

    def in_range(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


def _show(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value).lower() if isinstance(value, bool) else f"{value:g}" \
        if isinstance(value, float) else str(value)


# |λ| and |weight| above this scale ΔW by more than any merge needs, and overflow float32 near 1e38.
MAX_COEFFICIENT = 1e4

DENSITY = ParamDef("density", float, None, "share of each ΔW's entries kept by the trim (TIES paper k=20% is 0.2); "
                   "'trim: t' in a recipe means density 1-t. Default 1 (keep all)", 0, 1, low_open=True,
                   per_adapter=True)
LAMBDA = ParamDef("lambda", float, 1.0, "λ, the scale applied to the merged ΔW", -MAX_COEFFICIENT, MAX_COEFFICIENT)
SIGN = ParamDef("sign", SignRule, SignRule.sum, "TIES sign election: sum (mass, the paper's rule) or count "
                "(majority)")
NORMALIZE = ParamDef("normalize", bool, None, "divide by the summed weights of the agreeing adapters (TIES default "
                     "true, linear methods false)")
RESCALE = ParamDef("rescale", bool, None, "DARE/DELLA: rescale kept entries to the original L1 norm (default true)")
GAMMA = ParamDef("gamma", float, None, "breadcrumbs: share of largest entries dropped as outliers (mergekit's "
                 "default 0.01)", 0, 1, high_open=True)
EPSILON = ParamDef("epsilon", float, None, "DELLA: spread of keep probabilities around density (default 0.15)",
                   0, 1, low_open=True, high_open=True)
SEED = ParamDef("seed", int, 0, "seed for random methods (DARE, DELLA); each module derives its own")

# what every method's kernel gets as a MethodParams field; the rest arrive in MethodParams.options
CORE = (DENSITY, LAMBDA, SIGN, NORMALIZE, SEED)
