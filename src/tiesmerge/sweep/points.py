"""Grid points: one merge setting each, with a stable key, and the recipe a one-off merge would use."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

from tiesmerge.merge.recipe import AdapterEntry, MergeParameters, OutputSpec, Recipe
from tiesmerge.merge.registry import get as get_method
from tiesmerge.merge.types import Method, Space
from tiesmerge.sweep.config import SweepConfig


@dataclass(frozen=True)
class Point:
    method: Method
    density: float | None  # None: the method has no density (task arithmetic)
    lam: float
    rank: int | str
    space: Space

    @property
    def key(self) -> str:
        d = "na" if self.density is None else f"{self.density:g}"
        return f"{self.method.value}-d{d}-l{self.lam:g}-r{self.rank}-{self.space.value}"

    def as_dict(self) -> dict:
        return {"key": self.key, "method": self.method.value, "density": self.density, "lambda": self.lam,
                "rank": self.rank, "space": self.space.value}


def grid(cfg: SweepConfig) -> list[Point]:
    """Every combination; a method that reads no density (or no λ) gets one point per remaining setting."""
    points: dict[str, Point] = {}
    for method, density, lam, rank, space in itertools.product(cfg.methods, cfg.density, cfg.lam, cfg.rank, cfg.space):
        params = {d.name for d in get_method(method).parameters}  # the method's declared parameters
        p = Point(method, density if "density" in params else None, lam if "lambda" in params else 1.0, rank, space)
        points.setdefault(p.key, p)
    return list(points.values())


def recipe_for(cfg: SweepConfig, point: Point, adapters: Sequence[AdapterEntry]) -> Recipe:
    """The recipe of `tiesmerge merge` at this point's settings."""
    params: dict = {}
    spec = {d.name for d in get_method(point.method).parameters}
    if point.density is not None:
        params["density"] = point.density
    if "lambda" in spec:
        params["lambda"] = point.lam
    if "sign" in spec:
        params["sign"] = cfg.sign
    return Recipe(method=point.method, space=point.space, parameters=MergeParameters(**params),
                  adapters=[AdapterEntry(name=a.name, path=a.path, weight=a.weight) for a in adapters],
                  output=OutputSpec(rank=point.rank))
