"""The enums, parameter definitions and config models the API's functions take (and the CLI's flags are typed
with): import them from here, not from the packages below."""

from tiesmerge.calibration.prompts import DEFAULT_SIZE, PromptFormat
from tiesmerge.merge.params import DENSITY, LAMBDA, SEED, SIGN
from tiesmerge.merge.recipe import AdapterEntry, OutputSpec, Recipe
from tiesmerge.merge.types import Method, SignRule, Space
from tiesmerge.train.refine_settings import RefineSettings, RefineTarget

__all__ = ["DEFAULT_SIZE", "PromptFormat", "DENSITY", "LAMBDA", "SEED", "SIGN", "AdapterEntry", "OutputSpec",
           "Recipe", "Method", "SignRule", "Space", "RefineSettings", "RefineTarget"]
