"""Read and check a PEFT LoRA `adapter_config.json`; the effective scale of each module."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tiesmerge.errors import BadInputError
from tiesmerge.portable import limits
from tiesmerge.portable.errors import AgentInputError

CONFIG_NAME = "adapter_config.json"

# Options that change what the saved tensors mean, so that ΔW = s·B·A no longer
# describes the adapter. Merging them as plain LoRA would be silently wrong.
_UNSUPPORTED_FLAGS: Mapping[str, str] = {
    "use_dora": "DoRA adds a per-column magnitude vector that is not a low-rank delta; "
    "merge the DoRA weights into the base model first, or merge plain-LoRA adapters",
    "lora_bias": "lora_bias trains a bias on lora_B that is not part of ΔW = B·A",
    "use_qalora": "QA-LoRA pools inputs before lora_A, so ΔW is not B·A",
    "use_bdlora": "block-diagonal LoRA is not a plain B·A product",
}
_UNSUPPORTED_VALUES: Mapping[str, str] = {
    "target_parameters": "LoRA on nn.Parameter targets (target_parameters) is not supported",
    "modules_to_save": "modules_to_save stores full trainable copies of modules, which are not "
    "low-rank deltas; re-save the adapter without modules_to_save",
    "trainable_token_indices": "trainable tokens are full embedding rows, not low-rank deltas",
    "alora_invocation_tokens": "activated LoRA (aLoRA) applies only after invocation tokens",
    "layer_replication": "layer_replication changes the base model's layer layout",
    "arrow_config": "Arrow routing mixes adapters at inference time",
}


def _pattern_key(patterns: Mapping[str, Any], module: str) -> str | None:
    """PEFT's rule (peft.utils.other.get_pattern_key): the first pattern that matches
    a suffix of the module name, or None."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None


@dataclass(frozen=True)
class LoraSettings:
    """What tiesmerge needs from an adapter config."""

    path: Path
    r: int
    lora_alpha: float
    use_rslora: bool
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    base_model: str | None = None
    target_modules: Any = None
    fan_in_fan_out: bool = False
    task_type: str | None = None
    layers_restricted: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def rank_of(self, module: str) -> int:
        key = _pattern_key(self.rank_pattern, module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_of(self, module: str) -> float:
        key = _pattern_key(self.alpha_pattern, module)
        return float(self.alpha_pattern[key]) if key is not None else self.lora_alpha

    def scale_of(self, module: str) -> float:
        """PEFT's scaling for this module: α/r, or α/√r with use_rslora."""
        r, alpha = self.rank_of(module), self.alpha_of(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


# The largest |lora_alpha| read: PEFT's scale is alpha/r (or /√r); anything near float32's range overflows ΔW.
MAX_ALPHA = 1e6


def _count(value: Any, key: str, label: str, path: Path) -> int:
    """A positive integer rank (JSON true, 4.5, "8" or 0 are refused, not coerced)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value != int(value) \
            or value < 1:
        raise BadInputError(f"{label}: {path}: {key} must be a positive integer, got {value!r}; fix "
                            f"{CONFIG_NAME} (PEFT writes ranks as integers)")
    return int(value)


def _scale(value: Any, key: str, label: str, path: Path) -> float:
    """A finite, positive lora_alpha no larger than MAX_ALPHA (NaN, Infinity, 1e308, true, "16" are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= MAX_ALPHA:
        raise BadInputError(f"{label}: {path}: {key} must be a finite number in (0, {MAX_ALPHA:g}], got {value!r}; "
                            f"fix {CONFIG_NAME} (ΔW = alpha/r · B·A would be NaN, infinite or overflow)")
    return float(value)


def _mapping(value: Any, key: str, label: str, path: Path) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInputError(f"{label}: {path}: {key} must be a mapping of module pattern → value, "
                            f"got {type(value).__name__}")
    return value


def _is_set(value: Any) -> bool:
    return value not in (None, False, [], {}, "", 0)


def read_lora_settings(adapter_dir: Path, label: str) -> LoraSettings:
    """Parse and check `adapter_dir/adapter_config.json`; raise BadInputError naming the problem."""
    cfg_path = adapter_dir / CONFIG_NAME
    if not cfg_path.is_file():
        raise BadInputError(
            f"{label}: no {CONFIG_NAME} in {adapter_dir} — not a PEFT adapter directory "
            "(point at the folder that PeftModel.save_pretrained wrote)"
        )
    try:  # size- and depth-limited, like every JSON a user hands us
        raw = limits.read_json(cfg_path, f"{label}:")
    except AgentInputError as exc:
        raise BadInputError(f"{exc}; fix or re-save the adapter") from None
    if not isinstance(raw, dict):
        raise BadInputError(f"{label}: {cfg_path} must hold a JSON object, got {type(raw).__name__}")
    return settings_from_raw(raw, label, cfg_path)


def settings_from_raw(raw: Mapping[str, Any], label: str, cfg_path: Path, peft_type_required: bool = True
                      ) -> LoraSettings:
    """The checks of an adapter config's values — from a file or a dict in memory (`LoraFactors.from_config`): the
    one place they live, so both front doors accept and refuse the same configs."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"{label}: the config must be a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    peft_type = raw.get("peft_type", None if peft_type_required else "LORA")
    if peft_type != "LORA":
        raise BadInputError(
            f"{label}: peft_type is {peft_type!r}; tiesmerge merges LORA adapters only "
            "(plain LoRA or RSLoRA, saved by PEFT)"
        )
    for key, why in _UNSUPPORTED_FLAGS.items():
        if raw.get(key):
            raise BadInputError(f"{label}: {key}=true is not supported: {why}")
    for key, why in _UNSUPPORTED_VALUES.items():
        if _is_set(raw.get(key)):
            raise BadInputError(f"{label}: {key} is set ({raw[key]!r}) and is not supported: {why}")

    r = _count(raw.get("r", 8), "r", label, cfg_path)  # PEFT's LoraConfig defaults: r=8, lora_alpha=8
    alpha = _scale(raw.get("lora_alpha", 8), "lora_alpha", label, cfg_path)
    rank_pattern = {str(k): _count(v, f"rank_pattern[{k!r}]", label, cfg_path)
                    for k, v in _mapping(raw.get("rank_pattern"), "rank_pattern", label, cfg_path).items()}
    alpha_pattern = {str(k): _scale(v, f"alpha_pattern[{k!r}]", label, cfg_path)
                     for k, v in _mapping(raw.get("alpha_pattern"), "alpha_pattern", label, cfg_path).items()}
    for key in ("use_rslora", "fan_in_fan_out"):
        if not isinstance(raw.get(key, False), bool):
            raise BadInputError(f"{label}: {cfg_path}: {key} must be true or false, got {raw[key]!r}")
    base_model = raw.get("base_model_name_or_path")
    if base_model is not None and not isinstance(base_model, str):
        raise BadInputError(f"{label}: {cfg_path}: base_model_name_or_path must be a string or null, "
                            f"got {type(base_model).__name__}")
    if base_model and any(c in base_model for c in "\n\r\0"):
        raise BadInputError(f"{label}: {cfg_path}: base_model_name_or_path contains a line break or NUL "
                            f"({base_model!r}); give the base's hub id or folder on one line")

    restricted = any(_is_set(raw.get(k)) for k in ("layers_to_transform", "layers_pattern", "exclude_modules"))
    restricted = restricted or isinstance(raw.get("target_modules"), str)
    return LoraSettings(
        path=cfg_path,
        r=r,
        lora_alpha=alpha,
        use_rslora=raw.get("use_rslora", False),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        base_model=base_model or None,
        target_modules=raw.get("target_modules"),
        fan_in_fan_out=raw.get("fan_in_fan_out", False),
        task_type=raw.get("task_type"),
        layers_restricted=restricted,
        raw=raw,
    )
