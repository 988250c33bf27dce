"""The agents' settings: one frozen pydantic model read from `agents.yaml` (written by `tiesmerge deploy`),
with the tournament's `agen.yaml` / `qgen.yaml` generation keys laid over the answer / question sections."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tiesmerge.errors import BadInputError

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Generation(BaseModel):
    """Sampling settings shared by both agents; never exceeded (max_new_tokens caps every generate call)."""

    model_config = _FROZEN

    max_new_tokens: int = Field(..., ge=1, le=4096, description="most tokens one generate call may write")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (when temperature > 0)")
    repetition_penalty: float = Field(1.0, gt=0, le=3, description="1 = off")

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


class AnswerSettings(Generation):
    deadline_s: float = Field(5.5, gt=0, description="hard wall-clock budget per answer (the limit is 6 s)")
    max_new_tokens: int = Field(96, ge=1, le=4096, description="most tokens of one reasoning")
    reasoning_words: int = Field(100, ge=1, le=100, description="reasoning is cut to this many words")


class QuestionSettings(Generation):
    deadline_s: float = Field(9.0, gt=0, description="hard wall-clock budget per question (the limit is 10 s)")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="most tokens of one drafted question")
    temperature: float = Field(0.7, ge=0, le=5, description="drafting temperature (variety across questions)")
    top_p: float = Field(0.95, gt=0, le=1)
    topics: tuple[str, ...] = Field(("math", "code", "stem", "humanities"), min_length=1,
                                    description="topics, cycled over the questions")
    self_check: bool = Field(True, description="keep a draft only if the answer path picks its letter")
    draft: bool = Field(True, description="let the model draft questions (false: only verified built-in ones)")
    seed: int = Field(0, description="seed of sampling and of the built-in fallback questions")


class AgentsConfig(BaseModel):
    model_config = _FROZEN

    base: str = Field(..., description="base model: a local folder, a hub id, or `smollm2` (embedded)")
    adapter: str | None = Field(None, description="merged PEFT adapter folder (relative to the config file)")
    load_in_4bit: bool | None = Field(None, description="NF4 via bitsandbytes; default: on with CUDA, off on CPU")
    merge_adapter: bool = Field(True, description="fold the adapter into an unquantized base (faster)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    question: QuestionSettings = Field(default_factory=QuestionSettings)

    @model_validator(mode="after")
    def _check(self) -> "AgentsConfig":
        if self.answer.deadline_s >= 6.0:
            raise ValueError("answer.deadline_s must stay under the 6 s limit (default 5.5)")
        if self.question.deadline_s >= 10.0:
            raise ValueError("question.deadline_s must stay under the 10 s limit (default 9)")
        return self


# the tournament's yaml keys → ours (max_tokens is the name its rules use)
TOURNAMENT_KEYS = {"max_new_tokens": "max_new_tokens", "max_tokens": "max_new_tokens", "temperature": "temperature",
                   "top_p": "top_p", "repetition_penalty": "repetition_penalty"}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInputError(f"{path} must be a YAML mapping of settings")
    return data


def tournament_overrides(path: Path, log=lambda m: print(m, file=sys.stderr)) -> dict:
    """The generation keys of an `agen.yaml` / `qgen.yaml` that we honour; other keys are reported and ignored.
    `do_sample: false` means greedy (temperature 0)."""
    raw = _read_yaml(path)
    out = {TOURNAMENT_KEYS[k]: v for k, v in raw.items() if k in TOURNAMENT_KEYS}
    if raw.get("do_sample") is False:
        out["temperature"] = 0.0
    ignored = sorted(k for k in raw if k not in TOURNAMENT_KEYS and k != "do_sample")
    if ignored:
        log(f"{path.name}: ignoring {', '.join(ignored)} (honoured: {', '.join(sorted(TOURNAMENT_KEYS))}, do_sample)")
    return out


def load_agents_config(path: Path, log=lambda m: print(m, file=sys.stderr)) -> tuple[AgentsConfig, Path]:
    """(config, the folder relative paths are resolved against). `agen.yaml` / `qgen.yaml` next to it override
    the answer / question generation settings."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"no agents config at {path}: run `tiesmerge deploy` or pass --config FILE")
    raw = _read_yaml(path)
    root = path.resolve().parent
    for name, section in (("agen.yaml", "answer"), ("qgen.yaml", "question")):
        extra = root / name
        if extra.is_file():
            raw[section] = {**(raw.get(section) or {}), **tournament_overrides(extra, log)}
    try:
        return AgentsConfig.model_validate(raw), root
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise BadInputError(f"{path}: {where}: {err['msg']}") from None
