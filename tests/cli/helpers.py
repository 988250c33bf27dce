"""Run the CLI in-process and check its contract."""

from __future__ import annotations

from typer.testing import CliRunner

from tiesmerge.cli.app import app


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
