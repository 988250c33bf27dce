"""The Python API: what the CLI does, as typed functions (no printing, no SystemExit; errors are
tiesmerge.TiesmergeError / BadInputError with the CLI's one-line messages). Re-exported from `tiesmerge`."""

from tiesmerge.adapters.memory import LoraFactors
from tiesmerge.api.info import Inspection, MethodInfo, Validation, export, inspect, methods, validate
from tiesmerge.api.merging import merge, merge_factors
from tiesmerge.configs.loader import load_recipe
from tiesmerge.merge.driver import MergeResult
from tiesmerge.merge.memory import MergedFactors
from tiesmerge.merge.recipe import Recipe

__all__ = ["merge", "merge_factors", "Recipe", "load_recipe", "inspect", "validate", "export", "methods",
           "LoraFactors", "MergedFactors", "MergeResult", "Inspection", "Validation", "MethodInfo"]
