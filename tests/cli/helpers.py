"""Run the CLI in-process and check its contract."""

from __future__ import annotations

from typer.testing import CliRunner

from tiesmerge.cli.app import app


def run_cli(*args: str, env: dict[str, str] | None = None):
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2 (oldest typer): stderr apart only when asked
    except TypeError:
        runner = CliRunner()  # click ≥ 8.2 keeps stdout and stderr apart always
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env=env)


def with_config(src, dst, **changes):
    """A copy of adapter folder `src` at `dst` with adapter_config.json keys changed."""
    import json
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst
