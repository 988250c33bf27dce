"""What every command shares: one-line errors with exit codes, --debug, help text from the config models."""

from __future__ import annotations

import errno
import functools
import os
import signal
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer
from pydantic import BaseModel

from tiesmerge.errors import BadInputError, Interrupted, TiesmergeError

F = TypeVar("F", bound=Callable[..., Any])


def debug_enabled(ctx: "typer.Context | None") -> bool:
    """--debug (set by the app callback on the root context) or TIESMERGE_DEBUG=1."""
    if os.environ.get("TIESMERGE_DEBUG"):
        return True
    root = ctx.find_root() if ctx is not None else None
    return bool((root.obj or {}).get("debug")) if root is not None else False


def fail(message: str, code: int) -> "typer.Exit":
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(fn: F) -> F:
    """Turn library errors into `error: <one line>` on stderr and the error's exit code (2: bad input).

    The command takes `ctx: typer.Context` so that --debug can be read from the root context.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # typer passes its click Context (a base class of typer.Context): find it by its API
        ctx = next((a for a in (*args, *kwargs.values()) if callable(getattr(a, "find_root", None))), None)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TiesmergeError as exc:
            if debug_enabled(ctx):
                raise
            raise fail(str(exc).replace("\n", " "), exc.exit_code) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            raise fail(f"interrupted by {signal.Signals(signum).name}; nothing was written "
                       "(a finished output is only ever renamed into place whole)", 128 + signum) from None
        except OSError as exc:
            if debug_enabled(ctx):
                raise
            if exc.errno == errno.ENAMETOOLONG:  # a path given on the command line or in a recipe
                where = str(exc.filename or "a path")
                shown = where if len(where) <= 100 else f"{where[:60]}…{where[-30:]}"
                raise fail(f"{shown}: the path (or one of its names) is longer than the file system allows; "
                           "give a shorter path", 2) from None
            raise fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1) from None
        except Exception as exc:  # a bug: say so, keep the traceback for --debug
            if debug_enabled(ctx):
                raise
            raise fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1) from None

    return wrapper  # type: ignore[return-value]


def field_help(model: type[BaseModel], name: str) -> str:
    """The config model's description of a field, so a flag's help is written once, in the model."""
    return model.model_fields[name].description or ""


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def handle_signals() -> None:
    """SIGTERM and SIGHUP end a command like Ctrl-C: temp outputs are removed, one line, exit 128 + signal.
    (Until this runs, cli/entry.py's start-up handler answers every signal with one line.)"""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)


def name_value_pairs(values, flag: str, sep: str = "=") -> dict[str, str]:
    """Repeated `--flag NAME=VALUE` values → {name: value}; a malformed or repeated name is one line."""
    out: dict[str, str] = {}
    for v in values:
        name, ok, rest = v.partition(sep)
        if not ok or not name or not rest:
            raise BadInputError(f"{flag} {v!r}: expected NAME{sep}VALUE")
        if name in out:
            raise BadInputError(f"{flag}: {name!r} given twice")
        out[name] = rest
    return out


def data_args(values) -> list[tuple[str | None, Path]]:
    """`--data DOMAIN=FILE` or `--data FILE` values → (domain or None, path)."""
    out = []
    for v in values:
        domain, ok, path = v.partition("=")
        out.append((domain, Path(path)) if ok and domain and not Path(v).exists() else (None, Path(v)))
    return out
