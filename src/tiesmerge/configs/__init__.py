"""Typed recipe configs and their YAML loader."""

from tiesmerge.configs.loader import load_recipe, preset_path, read_yaml, recipe_from_dict, recipe_to_yaml
from tiesmerge.merge.recipe import AdapterEntry, MergeParameters, OutputSpec, Recipe

__all__ = [
    "AdapterEntry",
    "MergeParameters",
    "OutputSpec",
    "Recipe",
    "load_recipe",
    "preset_path",
    "read_yaml",
    "recipe_from_dict",
    "recipe_to_yaml",
]
