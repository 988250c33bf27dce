"""The typer application: global options and the command table."""

from __future__ import annotations

import sys

if __name__ == "__main__":  # `python -m tiesmerge.cli.app`: signals answered in one line from here on
    from tiesmerge.cli.start import install_start_handlers

    install_start_handlers()

import typer  # noqa: E402

from tiesmerge.cli import adapters, calibrate, data, demo, deploy, examples, inspect, merge, methods, sweep
from tiesmerge.cli import eval as eval_cli
from tiesmerge.cli import export as export_cli
from tiesmerge.cli.common import handle_signals
from tiesmerge.portable.quiet import quiet_libraries
from tiesmerge.version import __version__  # noqa: E402

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
    sys.exit(run(sys.argv[1:]))


def run(argv: list[str]) -> int:
    """The app on `argv`; a usage error (unknown option, missing or malformed value) is one `error:` line naming the
    command's --help and exit 2, not click's multi-line box."""
    usage, abort, other = _click_errors()
    try:
        code = app(args=argv, prog_name="tiesmerge", standalone_mode=False)
    except usage as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group given no command: its help, as click prints it
            print(exc.format_message(), file=sys.stderr)
            return 2
        where = ctx.command_path if ctx is not None else "tiesmerge"
        message = " ".join(exc.format_message().split())
        print(f"error: {message} (see `{where} --help`)", file=sys.stderr)
        return 2
    except abort:
        print("error: interrupted", file=sys.stderr)
        return 130
    except other as exc:
        print(f"error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))
    return code if isinstance(code, int) else 0


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts, other click errors) of click and of the click that newer typer vendors."""
    import importlib

    usage, abort, other = [], [], []
    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        usage.append(mod.UsageError)
        other.append(mod.ClickException)
        if hasattr(mod, "Abort"):
            abort.append(mod.Abort)
    return tuple(usage), tuple(abort), tuple(other)


if __name__ == "__main__":
    main()
