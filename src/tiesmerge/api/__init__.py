"""The Python API — the one front door: every job the CLI runs, as typed functions (no printing, no SystemExit;
errors are tiesmerge.TiesmergeError / BadInputError with the CLI's one-line messages, TypeError on a wrong type).
Every CLI command reads its flags, calls one of these, and prints. Re-exported from `tiesmerge`."""

from tiesmerge.adapters.memory import LoraFactors
from tiesmerge.api.calibrating import Calibration, Refined, calibrate, refine
from tiesmerge.api.evaluating import evaluate, export_lm_eval
from tiesmerge.api.exporting import export
from tiesmerge.api.info import Inspection, MethodInfo, Validation, inspect, methods, parameters, validate
from tiesmerge.api.merging import MergePlan, merge, merge_factors, plan_merge
from tiesmerge.api.recipes import build_recipe
from tiesmerge.api.running import build_data, create_examples, demo, deploy, sweep, train_adapter
from tiesmerge.configs.loader import load_recipe
from tiesmerge.merge.driver import MergeResult
from tiesmerge.merge.memory import MergedFactors
from tiesmerge.merge.recipe import Recipe

__all__ = ["merge", "merge_factors", "plan_merge", "build_recipe", "Recipe", "load_recipe", "inspect", "validate",
           "export", "methods", "parameters", "calibrate", "refine", "evaluate", "export_lm_eval", "sweep", "deploy",
           "demo", "train_adapter", "build_data", "create_examples", "LoraFactors", "MergedFactors", "MergeResult",
           "MergePlan", "Inspection", "Validation", "MethodInfo", "Calibration", "Refined"]
