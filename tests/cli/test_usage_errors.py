"""Usage errors (an unknown option or command, a malformed or missing value) are one `error:` line naming the
command's --help, exit 2 — through the real console entry point, where click would print a multi-line box."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.core


@pytest.mark.parametrize("argv, needle", [  # (click's wording differs between versions: the stable part)
    (["merge", "--bogus"], "--bogus"),
    (["merge", "--density", "abc", "--adapter", "a=b"], "--density"),
    (["refine"], ""),  # a missing -o (or, first, the missing adapters): one line either way
    (["nosuchcmd"], "nosuchcmd"),
    (["merge", "--rank"], "--rank"),
])
def test_a_usage_error_is_one_line_and_exit_2(argv, needle):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "tiesmerge", *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0] and "--help" in lines[0], lines
    assert res.stdout == ""


def test_help_and_version_still_exit_0():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for argv in (["merge", "--help"], ["--version"]):
        res = subprocess.run([sys.executable, "-m", "tiesmerge", *argv], capture_output=True, text=True, env=env,
                             timeout=120)
        assert res.returncode == 0 and res.stdout.strip(), (argv, res.stderr)


def test_overlong_paths_anywhere_are_one_line_and_exit_2(pair, tmp_path):
    """A too-long *intermediate* folder name in -o, a path over the file system's whole-path limit, and over-long
    input paths (inspect, a recipe) — each one line and exit 2, nothing written (they were OSError: Errno 36)."""
    from tests.cli.helpers import run_cli

    a, b = pair
    adapters = ["--adapter", f"a={a}", "--adapter", f"b={b}"]
    deep = "/".join(["y" * 200] * 25)  # 5 000 bytes, each name legal
    cases = [
        (["merge", *adapters, "-o", tmp_path / ("x" * 300) / "out"], "the folder name"),
        (["merge", *adapters, "-o", tmp_path / deep], "longer than the file system allows"),
        (["inspect", tmp_path / ("x" * 300) / "adapter"], "longer than the file system allows"),
        (["merge", tmp_path / ("x" * 300 + ".yaml"), "-o", tmp_path / "o"], "longer than the file system allows"),
    ]
    for argv, needle in cases:
        res = run_cli(*argv)
        assert res.exit_code == 2 and needle in res.stderr, (argv[0], res.stderr[:300])
        assert len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
