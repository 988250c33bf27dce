"""Usage errors (an unknown option or command, a malformed or missing value) are one `error:` line naming the
command's --help, exit 2 — through the real console entry point, where click would print a multi-line box."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.core


@pytest.mark.parametrize("argv, needle", [
    (["merge", "--bogus"], "No such option: --bogus"),
    (["merge", "--density", "abc", "--adapter", "a=b"], "Invalid value for '--density'"),
    (["refine"], "Missing option '-o'"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["merge", "--rank"], "requires an argument"),
])
def test_a_usage_error_is_one_line_and_exit_2(argv, needle):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "tiesmerge", *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0] and "--help`" in lines[0], lines
    assert res.stdout == ""


def test_help_and_version_still_exit_0():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for argv in (["merge", "--help"], ["--version"]):
        res = subprocess.run([sys.executable, "-m", "tiesmerge", *argv], capture_output=True, text=True, env=env,
                             timeout=120)
        assert res.returncode == 0 and res.stdout.strip(), (argv, res.stderr)
