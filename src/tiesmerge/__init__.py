"""tiesmerge: ΔW-space TIES merging of PEFT LoRA / RSLoRA adapters."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tiesmerge")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0+src"

__all__ = ["__version__"]
