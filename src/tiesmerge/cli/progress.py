"""A rich progress bar over modules, on stderr (tiesmerge.progress.module_progress, shared with the Python API)."""

from tiesmerge.progress import module_progress

__all__ = ["module_progress"]
