"""The sweep config: a frozen pydantic model validated at load (`tiesmerge sweep SWEEP.yaml`, or a preset name)."""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tiesmerge.errors import BadInputError, as_bad_input
from tiesmerge.merge.params import DENSITY, LAMBDA
from tiesmerge.merge.recipe import AdapterEntry, refuse_bools
from tiesmerge.merge.types import Method, SignRule, Space
from tiesmerge.portable import limits

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Metric(str, Enum):
    """How the best point is chosen — always on the validation split."""

    normalized_mean = "normalized_mean"  # mean over domains of merged ÷ specialist accuracy
    normalized_worst = "normalized_worst"  # the worst domain's merged ÷ specialist accuracy
    accuracy_mean = "accuracy_mean"  # mean accuracy over domains


class SweepAdapter(AdapterEntry):
    domain: str | None = Field(None, description="the domain this adapter specialises in (default: its name)")


class EvalSpec(BaseModel):
    model_config = _FROZEN

    builtin: bool = Field(True, description="use the built-in sets (validation split for selection, test for the report)")
    validation: dict[str, Path] = Field(default_factory=dict, description="DOMAIN: FILE validation questions")
    test: dict[str, Path] = Field(default_factory=dict, description="DOMAIN: FILE test questions (best point only)")
    limit: int | None = Field(None, ge=1, description="at most N validation questions per domain")
    test_limit: int | None = Field(None, ge=1, description="at most N test questions per domain (default: all)")
    mode: Literal["cloze", "letters"] = Field("cloze", description="scoring (see `tiesmerge eval --mode`)")
    batch_size: int = Field(16, ge=1)
    n_per_domain: int = Field(1000, ge=20, description="built-in set size per domain")
    data_seed: int = Field(0)

    @model_validator(mode="before")
    @classmethod
    def _strict(cls, data: Any) -> Any:
        return refuse_bools(cls, data)

    @model_validator(mode="after")
    def _check(self) -> "EvalSpec":
        if not self.builtin and not self.validation:
            raise ValueError("eval needs builtin: true or validation files (DOMAIN: FILE)")
        return self


class SweepConfig(BaseModel):
    model_config = _FROZEN

    base: str = Field("smollm2", description="base model for evaluation: `smollm2`, a local folder or a hub id")
    adapters: Union[list[SweepAdapter], Literal["demo"]] = Field(
        ..., description="the adapter set, or `demo`: the four demo specialists (trained once, cached)")
    methods: list[Method] = Field([Method.ties], min_length=1, description="merge methods to sweep")
    density: list[float] = Field([0.1, 0.2, 0.3, 0.5, 0.7, 1.0], min_length=1, description="densities (share kept)")
    lam: list[float] = Field([0.8, 1.0, 1.2], alias="lambda", min_length=1, description="λ values")
    rank: list[Union[int, Literal["auto", "full"]]] = Field([16], min_length=1, description="output ranks")
    space: list[Space] = Field([Space.full], min_length=1, description="merge spaces (full, core)")
    sign: SignRule = Field(SignRule.sum, description="TIES sign rule")
    metric: Metric = Field(Metric.normalized_mean, description="selection metric, on the validation split")
    preset: dict[str, float] = Field({"density": 0.2, "lambda": 1.0},
                                     description="the point the winner is compared with (the usual guess)")
    eval: EvalSpec = Field(default_factory=EvalSpec)
    device: str = Field("auto", description="merge device: cpu, cuda or auto")

    @model_validator(mode="before")
    @classmethod
    def _no_bools(cls, data: Any) -> Any:
        """`rank: [true]` or `lambda: [false]` are typos, not 1 and 0 (pydantic's lax mode would convert them)."""
        if isinstance(data, dict):
            for key in ("density", "lambda", "lam", "rank"):
                values = data.get(key)
                if isinstance(values, list) and any(isinstance(v, bool) for v in values):
                    raise ValueError(f"{key}: expected numbers{' (or auto / full)' if key == 'rank' else ''}, "
                                     f"got {values!r}")
        return data

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        for v in self.lam:  # each grid value is checked by the parameter's own declaration
            LAMBDA.check(v)
        for d in self.density:
            DENSITY.check(d)
        for r in self.rank:
            if isinstance(r, int) and r < 1:
                raise ValueError(f"rank {r} must be >= 1, auto or full")
        for name, values in (("density", self.density), ("lambda", self.lam), ("rank", self.rank)):
            if len(set(map(str, values))) != len(values):
                raise ValueError(f"{name} grid has repeated values")
        if isinstance(self.adapters, list):
            if len(self.adapters) < 2:
                raise ValueError("a sweep needs at least two adapters")
            names = [a.name for a in self.adapters]
            if len(set(names)) != len(names):
                raise ValueError("adapter names must be unique")
        return self

    def domain_of(self) -> dict[str, str]:
        """adapter name → its domain."""
        assert isinstance(self.adapters, list)
        return {a.name: a.domain or a.name for a in self.adapters}

    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PRESETS = ("demo",)


def load_sweep_config(source: str | Path) -> SweepConfig:
    """A YAML file (relative paths resolve against its folder) or a shipped preset name."""
    text = str(source)
    if text in PRESETS and not Path(text).exists():
        raw, root = yaml.safe_load(resources.files("tiesmerge.sweep").joinpath(f"presets/{text}.yaml").read_text()), None
    else:
        path = Path(text)
        if not path.is_file():
            raise BadInputError(f"sweep config {path} does not exist; pass a YAML file or a preset ({', '.join(PRESETS)})")
        raw = as_bad_input(limits.read_yaml)(path, "sweep config")
        root = path.resolve().parent
    if not isinstance(raw, dict):
        raise BadInputError(f"sweep config {source} must be a YAML mapping")
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise BadInputError(f"sweep config {source}: {where}: {err['msg']}") from None
    return resolve_paths(cfg, root) if root else cfg


def resolve_paths(cfg: SweepConfig, root: Path) -> SweepConfig:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (root / p).resolve()

    update: dict[str, Any] = {"eval": cfg.eval.model_copy(update={
        "validation": {d: fix(p) for d, p in cfg.eval.validation.items()},
        "test": {d: fix(p) for d, p in cfg.eval.test.items()}})}
    if isinstance(cfg.adapters, list):
        update["adapters"] = [a.model_copy(update={"path": fix(a.path)}) for a in cfg.adapters]
    return cfg.model_copy(update=update)
