"""tiesmerge: exact ΔW / core-space merging (TIES and its successors) of PEFT LoRA / RSLoRA adapters.

    >>> import tiesmerge
    >>> tiesmerge.merge(adapters={"math": "./math", "code": "./code"}, density=0.2, rank=64, output="merged/")

The API (`merge`, `merge_factors`, `calibrate`, `refine`, `evaluate`, `sweep`, `export`, `deploy`, `inspect`,
`validate`, `methods`, … — every job the CLI runs) and the errors are imported on first use, so `import tiesmerge`
stays light; `tiesmerge.peft.add_merged_adapter` is the drop-in for PEFT's `add_weighted_adapter`. See docs/api.md.
"""

import sys
import types
from importlib import import_module

from tiesmerge.version import __version__

_API = ("merge", "merge_factors", "plan_merge", "build_recipe", "Recipe", "load_recipe", "inspect", "validate",
        "export", "methods", "parameters", "calibrate", "refine", "evaluate", "export_lm_eval", "sweep", "deploy",
        "demo", "train_adapter", "build_data", "create_examples", "LoraFactors", "MergedFactors", "MergeResult",
        "MergePlan", "Inspection", "Validation", "MethodInfo", "Calibration", "Refined")
_ERRORS = ("TiesmergeError", "BadInputError")

__all__ = ["__version__", *_API, *_ERRORS]


def __getattr__(name: str):
    """The API on first use (PEP 562): torch and pydantic load when a function is reached, not at import."""
    if name in _API:
        return getattr(import_module("tiesmerge.api"), name)
    if name in _ERRORS:
        return getattr(import_module("tiesmerge.errors"), name)
    if name == "peft":  # the PEFT drop-in (tiesmerge.peft.add_merged_adapter), loaded on first use
        return import_module("tiesmerge.peft")
    raise AttributeError(f"module 'tiesmerge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def _api_function(name: str) -> property:
    def get(self):
        return getattr(import_module("tiesmerge.api"), name)

    def keep(self, value) -> None:
        """Importing the subpackage of the same name sets this attribute; it stays reachable in sys.modules."""

    return property(get, keep, doc=f"tiesmerge.api.{name}")


class _Package(types.ModuleType):
    """`tiesmerge.merge`, `export`, `sweep` and `demo` are API functions and also the names of subpackages
    (tiesmerge/merge/, tiesmerge/export/, …). Importing a subpackage sets the parent's attribute of that name, which
    would replace the function; these names are properties of the package's module type, so they always
    give the function, while `import tiesmerge.merge.driver` and friends keep working through sys.modules."""

    merge = _api_function("merge")
    export = _api_function("export")
    sweep = _api_function("sweep")
    demo = _api_function("demo")


sys.modules[__name__].__class__ = _Package
