"""The demo's settings: a frozen pydantic model (shipped as tiesmerge/demo/demo.yaml), hashed into cache keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tiesmerge.eval.builtin.build import DOMAINS
from tiesmerge.merge.params import LAMBDA
from tiesmerge.merge.recipe import refuse_bools

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TrainSpec(BaseModel):
    """One specialist's training settings (see `tiesmerge adapters train`)."""

    model_config = _FROZEN

    steps: int = Field(60, ge=1, description="optimizer steps")
    rank: int = Field(16, ge=1, description="LoRA rank r")
    alpha: float = Field(32.0, gt=0, description="lora_alpha (RSLoRA scale α/√r)")
    lr: float = Field(5e-4, gt=0, lt=1, description="peak learning rate (10% warmup, cosine decay)")
    batch_size: int = Field(8, ge=1, description="questions per step")
    seed: int = Field(0, description="initialisation and data-order seed")


class DemoConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)

    base: str = Field("smollm2", description="base model: `smollm2` (embedded), a local folder or a hub id")
    domains: tuple[str, ...] = Field(DOMAINS, min_length=2, description="built-in domains, one specialist each")
    n_per_domain: int = Field(1000, ge=20, description="built-in set size per domain (70/10/20 train/val/test)")
    data_seed: int = Field(0, description="seed of the built-in question sets")
    train: TrainSpec = Field(default_factory=TrainSpec, description="default training settings")
    train_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                       description="per-domain changes to `train`")
    density: float = Field(0.2, gt=0, le=1, description="TIES / PEFT ties_svd density (share of ΔW kept)")
    lam: float = Field(1.0, alias="lambda", description="TIES λ")
    rank: int = Field(16, ge=1, description="output rank of the TIES / task arithmetic / PEFT merges")
    subspace_method: Literal["iso_c", "iso_cts", "tsv"] = Field(
        "iso_c", description="the knowledge benchmark's best method (docs/quality.md), merged in core space at the "
        "exact rank Σ r with unit weights: one more row of the table")
    subspace_lambda: float = Field(1.0, gt=0, description="its λ (1.0: the benchmark's choice at rank Σ r)")
    refine_steps: int = Field(100, ge=0, description="refine the subspace merge on each specialist's own train "
                              "prompts (no answers) for this many steps: one more row (0: no refined row)")
    refine_prompts: int = Field(256, ge=2, description="calibration prompts per specialist for the refined row")
    refine_validation: int = Field(100, ge=0, description="labelled validation questions per domain (the built-in "
                                   "validation split, never the test split) that choose the refined state — the "
                                   "start when none beats it; 0: choose on held-out teacher agreement alone")
    mode: Literal["cloze", "letters"] = Field(
        "cloze", description="cloze: specialists learn to write the answer and are scored by each choice's "
        "likelihood (what a 135M model can learn in minutes); letters: options shown, the answer letter is "
        "trained and scored")
    eval_split: str = Field("test", description="split the table is computed on")
    limit: int | None = Field(None, ge=1, description="at most N evaluation questions per domain (default: all)")
    batch_size: int = Field(16, ge=1, description="evaluation batch size")
    eval_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the base's dtype while scoring (every row alike): auto is bfloat16 on CUDA and on CPUs "
        "with AVX-512 BF16 (4.7× faster than float32 on this project's CPU), float32 elsewhere")

    @model_validator(mode="before")
    @classmethod
    def _strict(cls, data: Any) -> Any:
        return refuse_bools(cls, data)

    @model_validator(mode="after")
    def _check(self) -> "DemoConfig":
        LAMBDA.check(self.lam)  # the merge parameters' own declarations (range, finiteness)
        LAMBDA.check(self.subspace_lambda)
        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown:
            raise ValueError(f"unknown domain(s) {', '.join(unknown)}; built-in: {', '.join(DOMAINS)}")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError("domains must be distinct")
        stray = sorted(set(self.train_overrides) - set(self.domains))
        if stray:
            raise ValueError(f"train_overrides for domains not in the demo: {', '.join(stray)}")
        for domain in self.train_overrides:
            self.train_for(domain)  # validates the override's keys and values
        if self.eval_split not in ("train", "validation", "test"):
            raise ValueError("eval_split must be train, validation or test")
        return self

    def train_for(self, domain: str) -> TrainSpec:
        return TrainSpec(**{**self.train.model_dump(), **self.train_overrides.get(domain, {})})


def load_demo_config(path: "Path | None") -> DemoConfig:
    """The shipped settings (tiesmerge/demo/demo.yaml) or a user's copy, validated with one-line errors."""
    from importlib import resources

    from pydantic import ValidationError

    from tiesmerge.configs.loader import format_validation_error, read_yaml
    from tiesmerge.errors import BadInputError

    source = Path(path) if path is not None else Path(str(resources.files("tiesmerge.demo") / "demo.yaml"))
    data = read_yaml(source)
    if not isinstance(data, dict):
        raise BadInputError(f"{source}: a demo config must be a YAML mapping (see the shipped tiesmerge/demo/demo.yaml)")
    try:
        return DemoConfig.model_validate(data)
    except ValidationError as exc:
        raise BadInputError(format_validation_error(exc, str(source))) from None
