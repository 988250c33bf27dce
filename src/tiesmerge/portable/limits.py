"""Size and depth limits for the JSON and YAML a user hands us: a question list, a recipe, agents.yaml.

Python's json and yaml parsers recurse once per nesting level, so a document nested a few thousand levels deep ends
in RecursionError (a traceback), and a multi-gigabyte file is read whole before anything is checked. Every reader of
user-given JSON / YAML goes through here: a file over MAX_BYTES, or nested deeper than MAX_DEPTH, is a one-line
AgentInputError naming the file (no real question list or recipe comes near either limit). Standard library and
yaml only: this file is copied into the deployed agents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import AgentInputError

MAX_BYTES = 256 * 2**20  # 256 MiB: a question list of a million questions is ~300 MB of JSONL, not one JSON
MAX_DEPTH = 32  # a question is 3 levels deep in its list; a recipe 4


def depth(value: Any) -> int:
    """Nesting depth of parsed JSON/YAML (a scalar is 0, [1] is 1), without recursion."""
    deepest, stack, seen = 0, [(value, 0)], set()
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, (list, dict)):
            if id(node) in seen:  # YAML anchors share nodes; each is walked once
                continue
            seen.add(id(node))
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, level + 1) for c in children if isinstance(c, (list, dict)))
            if children and not any(isinstance(c, (list, dict)) for c in children):
                deepest = max(deepest, level + 1)
    return deepest


def read_text(path: Path, what: str, max_bytes: int = MAX_BYTES) -> str:
    """The file's UTF-8 text, refusing one larger than max_bytes before reading it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise AgentInputError(f"{what} {path} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                                  "limit; split it into smaller files")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AgentInputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise AgentInputError(f"{what} {path} is a folder; pass a file") from None
    except UnicodeDecodeError as exc:
        raise AgentInputError(f"{what} {path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise AgentInputError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def checked(data: Any, what: str, max_depth: int = MAX_DEPTH) -> Any:
    if depth(data) > max_depth:
        raise AgentInputError(f"{what} is nested more than {max_depth} levels deep; it is not a question list or "
                              "config (flatten it)")
    return data


def loads_json(text: str, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads with one-line errors: JSONDecodeError and too-deep nesting become AgentInputError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AgentInputError(f"{what} is not JSON (not valid JSON at line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise AgentInputError(f"{what} is nested too deeply to read (over {max_depth} levels); flatten it") from None
    return checked(data, what, max_depth)


def read_json(path: Path, what: str, max_depth: int = MAX_DEPTH) -> Any:
    return loads_json(read_text(path, what), f"{what} {path}", max_depth)


def read_yaml(path: Path, what: str, max_bytes: int = 16 * 2**20, max_depth: int = MAX_DEPTH) -> Any:
    """yaml.safe_load (never a Python object) with size, depth and syntax errors as one line."""
    import yaml

    text = read_text(path, what, max_bytes)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise AgentInputError(f"{what} {path} is nested too deeply to read (over {max_depth} levels)") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise AgentInputError(f"{what} {path}: not valid YAML{line} ({getattr(exc, 'problem', None) or exc})") \
            from None
    return checked(data, f"{what} {path}", max_depth)


def read_question_list(path: Path, flag: str) -> list:
    """The tournament's question list: a JSON list (or {"questions": [...]}) — the one reader of this format,
    used by the deployed answer agent and by `tiesmerge eval`."""
    data = read_json(path, flag)
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        data = data["questions"]
    if not isinstance(data, list):
        raise AgentInputError(f"{flag} {path} holds a JSON {type(data).__name__}; it must be a list of questions")
    return data
