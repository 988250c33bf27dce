"""The agents' settings: frozen dataclasses read from `agents.yaml` (written by `tiesmerge deploy`), with the
tournament's `agen.yaml` / `qgen.yaml` generation keys laid over the answer / question sections.

Plain dataclasses checked by one small validator (each field's range and help text live in its metadata), so the
deployed agents need nothing beyond the standard library and yaml."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import limits
from .errors import AgentInputError

ANSWER_LIMIT_S = 6.0
QUESTION_LIMIT_S = 10.0
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _f(default, doc: str, lo=None, hi=None, *, lo_open=False, hi_open=False, choices=None, factory=None):
    meta = {"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Generation:
    """Sampling settings shared by both agents; max_new_tokens caps every generate call."""

    max_new_tokens: int = _f(40, "most tokens one generate call may write", 1, 4096)
    temperature: float = _f(0.0, "0 = greedy", 0, 5)
    top_p: float = _f(1.0, "nucleus sampling mass (when temperature > 0)", 0, 1, lo_open=True)
    repetition_penalty: float = _f(1.0, "1 = off", 0, 3, lo_open=True)

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


@dataclass(frozen=True)
class AnswerSettings(Generation):
    deadline_s: float = _f(5.5, "hard wall-clock budget per answer, from the start of its batch (limit 6 s)",
                           0, ANSWER_LIMIT_S, lo_open=True, hi_open=True)
    max_new_tokens: int = _f(40, "most tokens of one reasoning (all of a batch's reasonings are generated together)",
                             1, 4096)
    reasoning_words: int = _f(100, "reasoning is cut to this many words", 1, 100)
    batch_size: int = _f(8, "questions answered together (one letter pass, one reasoning generate); larger batches "
                         "spend more of the deadline on the letter pass before any reasoning", 1, 1024)


@dataclass(frozen=True)
class QuestionSettings(Generation):
    deadline_s: float = _f(9.0, "hard wall-clock budget per question, from the start of its batch (limit 10 s)",
                           0, QUESTION_LIMIT_S, lo_open=True, hi_open=True)
    max_new_tokens: int = _f(256, "most tokens of one drafted question", 1, 4096)
    temperature: float = _f(0.7, "drafting temperature (variety across questions)", 0, 5)
    top_p: float = _f(0.95, "nucleus sampling mass", 0, 1, lo_open=True)
    topics: tuple[str, ...] = _f(None, "topics, cycled over the questions",
                                 factory=lambda: ("math", "code", "stem", "humanities"))
    self_check: bool = _f(True, "keep a draft only if the answer path picks its letter")
    draft: bool = _f(True, "let the model draft questions (false: only verified built-in ones)")
    seed: int = _f(0, "seed of sampling and of the fallback draws")
    batch_size: int = _f(20, "questions drafted together", 1, 1024)


@dataclass(frozen=True)
class AgentsConfig:
    base: str = _f(None, "base model: a local folder or a hub id")
    adapter: str | None = _f(None, "merged PEFT adapter folder (relative to the config file); null: none")
    load_in_4bit: bool | None = _f(None, "NF4 via bitsandbytes; null: on with CUDA, off on CPU")
    merge_adapter: bool = _f(True, "fold the adapter into an unquantized base at load (no LoRA matmuls)")
    dtype: str = _f("auto", "auto, float32, bfloat16 or float16", choices=DTYPES)
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    bank: str | None = _f("fallback_bank.json", "verified fallback questions (JSON, relative to the config)")
    answer: AnswerSettings = _f(None, "answer agent settings", factory=AnswerSettings)
    question: QuestionSettings = _f(None, "question agent settings", factory=QuestionSettings)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["question"]["topics"] = list(self.question.topics)
        return d

    def replace(self, **changes) -> "AgentsConfig":
        return dataclasses.replace(self, **changes)


# --- validation -----------------------------------------------------------------------------------------------

def _check_value(f: dataclasses.Field, value, where: str):
    """The value converted to the field's type, or AgentInputError naming the field and the rule."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    meta = f.metadata
    optional = kind.endswith("| None")
    if value is None:
        if optional:
            return None
        raise AgentInputError(f"{where}: a value is required ({meta.get('doc')})")
    base = kind.replace("| None", "").strip()
    if base == "bool":
        if not isinstance(value, bool):
            raise AgentInputError(f"{where}: must be true or false (got {value!r})")
        return value
    if base in ("int", "float"):
        ok_int = isinstance(value, int) and not isinstance(value, bool)
        if base == "int" and not ok_int:
            raise AgentInputError(f"{where}: must be a whole number (got {value!r})")
        if base == "float" and not (ok_int or isinstance(value, float)):
            raise AgentInputError(f"{where}: must be a number (got {value!r})")
        if base == "float" and not math.isfinite(value):
            raise AgentInputError(f"{where}: must be a finite number")
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
            raise AgentInputError(f"{where}: must be {'>' if meta.get('lo_open') else '>='} {lo:g} (got {value!r})")
        if hi is not None and meta.get("hi_open") and value >= hi:
            raise AgentInputError(f"{where}: must stay under the {hi:g} s limit (got {value!r})")
        if hi is not None and value > hi:
            raise AgentInputError(f"{where}: must be <= {hi:g} (got {value!r})")
        return float(value) if base == "float" else int(value)
    if base == "str":
        if not isinstance(value, str) or not value.strip():
            raise AgentInputError(f"{where}: must be a non-empty string (got {value!r})")
        if meta.get("choices") and value not in meta["choices"]:
            raise AgentInputError(f"{where}: must be one of {', '.join(meta['choices'])} (got {value!r})")
        return value
    if base.startswith("tuple"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise AgentInputError(f"{where}: must be a non-empty list of strings")
        return tuple(dict.fromkeys(v.strip() for v in value))
    raise TypeError(f"no rule for field type {kind}")  # pragma: no cover - a programming error


def build(cls, raw, where: str = ""):
    """An instance of the settings dataclass `cls` from a mapping, every key and value checked."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise AgentInputError(f"{where or 'config'}: must be a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise AgentInputError(f"{name}: unknown setting (known: {', '.join(fields)})")
    values = {}
    for name, value in raw.items():
        f = fields[name]
        sub = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else None):
            values[name] = build(type(f.default_factory()), value, sub)
        else:
            values[name] = _check_value(f, value, sub)
    missing = [n for n, f in fields.items() if n not in values and f.default is None and f.default_factory is
               dataclasses.MISSING and not str(f.type).endswith("| None")]
    if missing:
        raise AgentInputError(f"{where + '.' if where else ''}{missing[0]}: a value is required")
    return cls(**values)


# the tournament's yaml keys → ours (max_tokens is the name its rules use)
TOURNAMENT_KEYS = {"max_new_tokens": "max_new_tokens", "max_tokens": "max_new_tokens", "temperature": "temperature",
                   "top_p": "top_p", "repetition_penalty": "repetition_penalty"}


def read_yaml(path: Path) -> dict:
    data = limits.read_yaml(path, "settings file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AgentInputError(f"{path} must be a YAML mapping of settings")
    return data


def tournament_overrides(path: Path, log=lambda m: print(m, file=sys.stderr)) -> dict:
    """The generation keys of an `agen.yaml` / `qgen.yaml` that we honour; other keys are reported and ignored.
    `do_sample: false` means greedy (temperature 0)."""
    raw = read_yaml(path)
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
        raise AgentInputError(f"no agents config at {path}: run `tiesmerge deploy` or pass --config FILE")
    raw = read_yaml(path)
    root = path.resolve().parent
    for name, section in (("agen.yaml", "answer"), ("qgen.yaml", "question")):
        extra = root / name
        if extra.is_file():
            raw[section] = {**(raw.get(section) or {}), **tournament_overrides(extra, log)}
    try:
        return build(AgentsConfig, raw), root
    except AgentInputError as exc:
        raise AgentInputError(f"{path}: {exc}") from None


def dump_yaml(cfg: AgentsConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
