"""Run short Python snippets in a subprocess: isolated interpreter, per-snippet timeout, no network, no file writes.

The child installs an audit hook (PEP 578) that refuses sockets, subprocesses and files opened
for writing, then runs each snippet with its stdout captured. One child runs a whole batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Sequence

_CHILD = r'''
import contextlib, io, json, signal, sys

def _guard(event, args):
    if event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork",
                         "os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.")):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        if any(c in mode for c in "wax+") or flags & 0o3:
            raise PermissionError("sandbox: writing files is not allowed")

snippets = json.loads(sys.stdin.read())
timeout = float(sys.argv[1])
out = []
sys.addaudithook(_guard)

def _alarm(*_):
    raise TimeoutError("snippet timed out")

signal.signal(signal.SIGALRM, _alarm)
for code in snippets:
    buf = io.StringIO()
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
        signal.setitimer(signal.ITIMER_REAL, 0)
        out.append({"ok": True, "stdout": buf.getvalue()})
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        out.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
sys.__stdout__.write(json.dumps(out))
'''


def run_snippets(snippets: Sequence[str], per_snippet_timeout: float = 2.0) -> list[dict]:
    """[{ok, stdout} | {ok: False, error}] for each snippet, in order."""
    if not snippets:
        return []
    with tempfile.TemporaryDirectory(prefix="tiesmerge-sandbox-") as cwd:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _CHILD, str(per_snippet_timeout)],
            input=json.dumps(list(snippets)), capture_output=True, text=True, cwd=cwd,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"},
            timeout=30 + per_snippet_timeout * len(snippets),
        )
    if proc.returncode != 0:
        raise RuntimeError(f"snippet sandbox failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)
