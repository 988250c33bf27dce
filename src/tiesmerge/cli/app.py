"""The typer application: global options and the command table."""

from __future__ import annotations

if __name__ == "__main__":  # `python -m tiesmerge.cli.app`: signals answered in one line from here on
    from tiesmerge.cli.start import install_start_handlers

    install_start_handlers()

import typer  # noqa: E402

from tiesmerge import __version__  # noqa: E402
from tiesmerge.cli import adapters, calibrate, data, demo, deploy, examples, inspect, merge, methods, sweep
from tiesmerge.cli import eval as eval_cli
from tiesmerge.cli import export as export_cli
from tiesmerge.cli.common import handle_signals
from tiesmerge.portable.quiet import quiet_libraries

app = typer.Typer(
    name="tiesmerge",
    help="Merge PEFT LoRA / RSLoRA adapters in ΔW space (TIES and the task-arithmetic family) into one PEFT adapter.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tiesmerge {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    ctx.obj = {"debug": debug}


app.command("merge")(merge.merge)
app.command("validate")(merge.validate)
app.command("inspect")(inspect.inspect)
app.command("methods")(methods.methods)
app.command("calibrate")(calibrate.calibrate)
app.command("refine")(calibrate.refine)
app.command("eval")(eval_cli.eval_cmd)
app.command("demo")(demo.demo)
app.command("export")(export_cli.export)
app.command("deploy")(deploy.deploy)
app.command("sweep")(sweep.sweep)
app.add_typer(data.app, name="data")
app.add_typer(adapters.app, name="adapters")
app.add_typer(examples.app, name="examples")


def main() -> None:
    quiet_libraries()
    handle_signals()
    app()


if __name__ == "__main__":
    main()
