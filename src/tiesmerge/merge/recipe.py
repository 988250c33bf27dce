"""The merge recipe: frozen pydantic models, validated when loaded (before anything is read or written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tiesmerge.adapters import hub
from tiesmerge.atomic import user_path
from tiesmerge.merge.params import DENSITY, LAMBDA, MAX_COEFFICIENT, NORMALIZE, SEED, SIGN, ParamDef
from tiesmerge.merge.registry import get as get_method
from tiesmerge.merge.registry import known_parameters
from tiesmerge.merge.types import Method, RankMode, SignRule, Space, SvdMode

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, use_enum_values=False, allow_inf_nan=False)


def refuse_bools(model: type[BaseModel], data: Any) -> Any:
    """Refuse a YAML/JSON boolean where a number is expected: `rank: true` would otherwise become rank 1 and
    `weight: false` weight 0 (pydantic's lax mode converts them)."""
    if not isinstance(data, dict):
        return data
    for key, value in data.items():
        name = "lam" if key == "lambda" else key
        info = model.model_fields.get(name)
        if isinstance(value, bool) and info is not None and "bool" not in str(info.annotation):
            raise ValueError(f"{key}: expected a number{' or a word' if name == 'rank' else ''}, got {value!r}")
    return data


def check_coefficient(value: float, what: str) -> float:
    """A finite λ or weight within ±MAX_COEFFICIENT (ValueError otherwise)."""
    if abs(value) > MAX_COEFFICIENT:
        raise ValueError(f"{what} {value:g} is outside ±{MAX_COEFFICIENT:g}: it would overflow the merged ΔW "
                         "(float32 tops out near 3e38); use a value on the scale of the adapters' weights")
    return value


def _density_from_trim(data: Any) -> Any:
    """Accept `trim: t` (drop the smallest t) as `density: 1 - t`; store density only."""
    if isinstance(data, dict) and data.get("trim") is not None:
        if data.get("density") is not None:
            raise ValueError("give either density (share kept) or trim (share dropped), not both")
        data = dict(data)
        trim = data.pop("trim")
        if not isinstance(trim, (int, float)) or isinstance(trim, bool) or not 0 <= trim < 1:
            raise ValueError(f"trim must be a number in [0, 1) (the share of smallest entries dropped), got {trim!r}")
        data["density"] = round(1.0 - float(trim), 12)
    elif isinstance(data, dict) and "trim" in data:
        data = {k: v for k, v in data.items() if k != "trim"}
    return data


class MergeParameters(BaseModel):
    """The recipe's `parameters:` mapping. Each key is a parameter some method declares (merge/params.py and the
    method files): its type, range and default live there, once; which keys a method reads is checked by Recipe.
    Read a value with `get(DEF)` (the default when not given) or the shared accessors below."""

    model_config = ConfigDict(frozen=True, extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _check_values(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"parameters must be a mapping of name: value, got {type(data).__name__}")
        data = _density_from_trim(dict(data))
        if "lam" in data and "lambda" not in data:  # the Python spelling (lambda is a keyword)
            data["lambda"] = data.pop("lam")
        known = known_parameters()
        out = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown parameter {key!r} (check the spelling; `tiesmerge methods` lists each "
                                 f"method's parameters: {', '.join(sorted(known))})")
            try:
                out[key] = known[key].check(value)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return out

    def given(self) -> dict[str, Any]:
        """The parameters the recipe sets, by recipe name."""
        return dict(self.__pydantic_extra__ or {})

    def get(self, definition: ParamDef) -> Any:
        return self.given().get(definition.name, definition.default)

    @property
    def density(self) -> float | None:
        return self.get(DENSITY)

    @property
    def lam(self) -> float:
        return self.get(LAMBDA)

    @property
    def sign(self) -> SignRule:
        return self.get(SIGN)

    @property
    def normalize(self) -> bool | None:
        return self.get(NORMALIZE)

    @property
    def seed(self) -> int:
        return self.get(SEED)


class AdapterEntry(BaseModel):
    model_config = _FROZEN

    name: str = Field(..., min_length=1, description="a short name for the adapter (used in reports)")
    path: Path = Field(..., description="PEFT adapter directory; relative paths resolve against the recipe's folder")
    weight: float = Field(1.0, description="the adapter's weight w_i")
    density: float | None = Field(None, description="per-adapter density, overriding parameters.density")
    calibration: str | None = Field(None, min_length=1, description="the adapter's own unlabeled prompts (a question or "
                                    "text file, or builtin:DOMAIN:SPLIT), for calibrate / refine / regmean")
    statistics: Path | None = Field(None, description="its input statistics file from `tiesmerge calibrate` (regmean)")
    hub: str | None = Field(None, description="set when `path` is a Hugging Face Hub id (org/name[@revision]) with no "
                            "local folder of that name: the adapter is read from the Hub cache")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        data = _density_from_trim(refuse_bools(cls, data))
        if isinstance(data, dict) and not data.get("name") and data.get("path"):
            data = {**data, "name": Path(str(data["path"])).name}
        return data

    @field_validator("weight")
    @classmethod
    def _weight_in_range(cls, v: float) -> float:
        return check_coefficient(v, "weight")

    @field_validator("density", mode="before")
    @classmethod
    def _density_in_range(cls, v: Any) -> Any:
        return DENSITY.check(v)


class OutputSpec(BaseModel):
    model_config = _FROZEN

    rank: Union[int, Literal["auto", "full"]] = Field(
        "auto",
        description="output LoRA rank: an int (truncated SVD), auto (smallest rank keeping `energy` of ‖ΔW‖², "
        "per module), or full (lossless)",
    )
    energy: float = Field(0.99, gt=0, le=1, description="rank=auto: share of ‖ΔW‖²_F each module keeps")
    max_rank: int | None = Field(None, ge=1, description="rank=auto: cap per module (default: the largest input rank)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the written factors (auto: the inputs' dtype)"
    )
    svd: SvdMode = Field(
        SvdMode.auto, description="SVD used to truncate: exact (economy), randomized, or auto by matrix size"
    )

    @model_validator(mode="before")
    @classmethod
    def _strict(cls, data: Any) -> Any:
        return refuse_bools(cls, data)

    def unused(self) -> list[str]:
        """Notes for settings this output does not read (energy / max_rank apply to rank auto only)."""
        if self.rank_mode is RankMode.auto:
            return []
        given = sorted(self.model_fields_set & {"energy", "max_rank"})
        return [f"{k} applies only with rank auto; ignored with rank {self.rank}" for k in given]

    @property
    def rank_mode(self) -> RankMode:
        return RankMode.fixed if isinstance(self.rank, int) else RankMode(self.rank)

    @field_validator("rank")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("rank must be >= 1, 'auto' or 'full'")
        return v


class Recipe(BaseModel):
    model_config = _FROZEN

    method: Method = Field(Method.ties, description="merge method (see `tiesmerge methods`)")
    space: Space = Field(Space.full, description="merge space: full (dense ΔW) or core (K×K cores of shared bases, "
                         "no dense matrix; output rank ≤ Σ r_i)")
    parameters: MergeParameters = Field(default_factory=MergeParameters)
    adapters: list[AdapterEntry] = Field(..., min_length=1)
    output: OutputSpec = Field(default_factory=OutputSpec)
    base_model: str | None = Field(None, description="expected base model; checked against each adapter's config")
    allow_base_mismatch: bool = Field(False, description="merge adapters whose configs name different base models")

    @model_validator(mode="after")
    def _check(self) -> "Recipe":
        names = [a.name for a in self.adapters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"adapter names must be unique; repeated: {', '.join(dupes)}")
        spec = get_method(self.method)
        given = set(self.parameters.given()) - {SEED.name}
        densities = [d for d in [self.parameters.density, *(a.density for a in self.adapters)] if d is not None]
        if any(a.density is not None for a in self.adapters):
            given.add(DENSITY.name)
        stray = sorted(given - {p.name for p in spec.parameters})
        if stray:
            raise ValueError(
                f"parameter(s) {', '.join(stray)} do not apply to method {self.method.value} "
                f"(it reads: {', '.join(p.name for p in spec.parameters)})"
            )
        if self.space not in spec.spaces:
            raise ValueError(f"method {self.method.value} does not run in {self.space.value} space "
                             f"(it runs in: {', '.join(sorted(s.value for s in spec.spaces))})")
        if spec.check is not None:
            spec.check(self.parameters, densities)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)

    def resolved(self, base_dir: Path, log: Callable[[str], None] | None = None) -> "Recipe":
        """A copy whose relative adapter paths are resolved against `base_dir`; an adapter path shaped like a Hub
        id (`org/name[@revision]`) that is not a local folder resolves through the Hugging Face cache (`log` gets
        one line saying which copy is used)."""
        def here(p: Path) -> Path:
            p = user_path(p, "adapter path") if str(p).startswith("~") else p
            return _resolve(p if p.is_absolute() else base_dir / p)

        def hub_id(a: AdapterEntry) -> str | None:
            """The Hub id a path names when no local folder has that name (fetched when the job opens it)."""
            if a.hub is not None or hub.hub_id(str(a.path)) is None:
                return a.hub
            if here(a.path).exists():
                if log is not None:
                    log(f"adapter {a.name!r} {a.path}: using the local folder {here(a.path)} (it shadows the Hub id "
                        "of that name)")
                return None
            return str(a.path)

        adapters = [a.model_copy(update={
            "path": here(a.path),
            "hub": hub_id(a),
            "statistics": here(a.statistics) if a.statistics is not None else None,
            "calibration": (a.calibration if a.calibration is None or a.calibration.startswith("builtin:")
                            else str(here(Path(a.calibration))))}) for a in self.adapters]
        return self.model_copy(update={"adapters": adapters})


def _resolve(path: Path) -> Path:
    """The real path; a symlink loop stays as given, for the reader to name."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return path.absolute()
