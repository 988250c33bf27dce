"""Read, check and write PEFT LoRA adapters."""

from tiesmerge.adapters.compat import ModulePlan, SetPlan, plan_set
from tiesmerge.adapters.reader import AdapterReader, ModuleEntry

__all__ = ["AdapterReader", "ModuleEntry", "ModulePlan", "SetPlan", "plan_set"]
