"""mergekit's YAML recipes, read as tiesmerge recipes when every model is a PEFT LoRA adapter.

mergekit (`mergekit/config.py`): `merge_method`, `models: [{model, parameters: {weight, density, …}}]`, top-level
`parameters` (lambda, normalize, rescale, epsilon, gamma, …), `base_model`, `dtype`. Each field maps to ours; a field
with no meaning for LoRA-in → LoRA-out merging is refused with its reason, and fields that only tune mergekit's own
execution are noted and ignored.
"""

from __future__ import annotations

from typing import Any

from tiesmerge.errors import BadInputError

METHODS = {  # mergekit merge_method → (tiesmerge method, extra parameters)
    "ties": ("ties", {}),
    "task_arithmetic": ("task_arithmetic", {}),
    "linear": ("task_arithmetic", {"normalize": True}),  # mergekit's linear is the normalized weighted average
    "dare_ties": ("dare_ties", {}),
    "dare_linear": ("dare_linear", {}),
    "breadcrumbs": ("breadcrumbs", {}),
    "breadcrumbs_ties": ("breadcrumbs_ties", {}),
    "della": ("della", {}),
    "della_linear": ("della_linear", {}),
}
REFUSED_TOP = {
    "slices": "per-layer slices stitch different models' layers together; a LoRA merge covers every adapted module",
    "tokenizer_source": "LoRA adapters share their base's tokenizer; there is no tokenizer to merge",
    "tokenizer": "LoRA adapters share their base's tokenizer; there is no tokenizer to merge",
    "chat_template": "the chat template belongs to the base model, not to the adapters",
    "out_dtype": "use dtype (the written factors' dtype)",
}
IGNORED = {"int8_mask": "an execution detail of mergekit's kernel (no effect on the result)"}
ADAPTER_PARAMS = {"weight", "density"}
TOP_PARAMS = {"lambda", "normalize", "rescale", "epsilon", "gamma"}


def is_mergekit(data: Any) -> bool:
    return isinstance(data, dict) and "merge_method" in data


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, (list, dict)):
        raise BadInputError(f"{where}: per-layer gradients / filters have no meaning in a LoRA merge (every module is "
                            "merged with the same settings); give one number")
    return value


def _mapping(value: Any, where: str) -> dict:
    """A mergekit `parameters:` block: a mapping (or absent)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInputError(f"{where} must be a mapping of name: value (e.g. `density: 0.5`), "
                            f"got a {type(value).__name__}")
    return value


def unique_names(paths: list[str]) -> list[str]:
    """Each adapter's name: its folder name, or — where folder names collide (`x/a/m`, `x/b/m`) — the shortest
    trailing part of its path that tells them apart (`a/m`, `b/m`). mergekit's syntax has no name field."""
    parts = [[p for p in path.replace("\\", "/").rstrip("/").split("/") if p] or [path] for path in paths]
    names = []
    for i, own in enumerate(parts):
        for n in range(1, len(own) + 1):
            tail = own[-n:]
            if all(other[-n:] != tail for j, other in enumerate(parts) if j != i) or n == len(own):
                names.append("/".join(tail))
                break
    return names


def from_mergekit(data: dict, source: str, notes: list[str] | None = None) -> dict:
    """The tiesmerge recipe dict equivalent to a mergekit YAML document."""
    notes = notes if notes is not None else []
    for key, why in REFUSED_TOP.items():
        if key in data:
            raise BadInputError(f"{source}: mergekit's `{key}` is not supported: {why}")
    method = data.get("merge_method")
    if method not in METHODS:
        raise BadInputError(f"{source}: merge_method {method!r} has no LoRA equivalent here; use one of "
                            f"{', '.join(METHODS)}")
    ours, extra = METHODS[method]
    unknown = sorted(set(data) - {"merge_method", "models", "parameters", "base_model", "dtype", *IGNORED})
    if unknown:
        raise BadInputError(f"{source}: unknown mergekit key(s) {', '.join(unknown)}")
    params = dict(extra)
    for key, value in _mapping(data.get("parameters"), f"{source}: parameters").items():
        if key in IGNORED:
            notes.append(f"{source}: ignoring parameters.{key} ({IGNORED[key]})")
        elif key in TOP_PARAMS or key == "density":
            params[key] = _scalar(value, f"{source}: parameters.{key}")
        elif key == "weight":
            raise BadInputError(f"{source}: parameters.weight: give each model its weight under models[].parameters")
        else:
            raise BadInputError(f"{source}: parameters.{key} has no tiesmerge equivalent")
    for key in IGNORED:
        if key in data:
            notes.append(f"{source}: ignoring {key} ({IGNORED[key]})")
    models = data.get("models")
    if models is not None and not isinstance(models, list):
        raise BadInputError(f"{source}: models must be a list of `- model: PATH` entries, got a "
                            f"{type(models).__name__}")
    adapters = []
    for i, entry in enumerate(models or []):
        where = f"{source}: models[{i}]"
        if not isinstance(entry, dict) or "model" not in entry:
            raise BadInputError(f"{where}: each entry needs `model: PATH` (a PEFT LoRA adapter folder)")
        if not isinstance(entry["model"], str) or not entry["model"]:
            raise BadInputError(f"{where}: model must be a path (a PEFT LoRA adapter folder), got {entry['model']!r}")
        path = entry["model"]
        if "+" in path:
            raise BadInputError(f"{where}: `{path}` applies a LoRA to a model (mergekit's base+lora); list the "
                                "adapter folder itself")
        item: dict[str, Any] = {"path": path}
        for key, value in _mapping(entry.get("parameters"), f"{where}.parameters").items():
            if key not in ADAPTER_PARAMS:
                raise BadInputError(f"{where}: parameters.{key} has no per-adapter tiesmerge equivalent "
                                    f"(per adapter: {', '.join(sorted(ADAPTER_PARAMS))})")
            item[key] = _scalar(value, f"{where}.parameters.{key}")
        adapters.append(item)
    if not adapters:
        raise BadInputError(f"{source}: models lists no adapters")
    for item, name in zip(adapters, unique_names([a["path"] for a in adapters])):
        item["name"] = name
    recipe: dict[str, Any] = {"method": ours, "parameters": params, "adapters": adapters}
    for key in ("base_model", "dtype"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise BadInputError(f"{source}: {key} must be a string, got {data[key]!r}")
    if data.get("base_model"):
        recipe["base_model"] = data["base_model"]
    if data.get("dtype"):
        recipe["output"] = {"dtype": data["dtype"]}
    return recipe
