"""Tables stay readable at 80 columns: a name is never cut to an ellipsis (the demo once showed two rows both
called `peft_t…`), and `tiesmerge methods` never breaks a method's name."""

from __future__ import annotations

import pytest
from rich.console import Console

pytestmark = pytest.mark.core


def render(table, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def test_demo_table_names_wrap_instead_of_being_cut():
    from tiesmerge.demo.table import rich_table

    names = ["peft_ties_svd (as saved, RSLoRA scale bug)", "peft_ties_svd (scale corrected)", "tiesmerge TIES"]
    rows = [[n, "46.2 (43.1–49.3)", "92.3", "81.7 (math)", "79.9"] for n in names]
    text = render(rich_table("merges", ["merge", "mean acc %", "norm. acc %", "worst %", "gain kept %"], rows))
    assert "…" not in text
    first_col = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") >= 6)
    for n in names:
        assert n.replace(" ", "") in first_col.replace(" ", "")


def test_methods_table_keeps_every_name_whole_at_80_columns():
    from typer.testing import CliRunner

    from tiesmerge.cli.app import app
    from tiesmerge.merge.registry import REGISTRY

    res = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "80"})
    assert res.exit_code == 0
    table = [line for line in res.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80
    cells = {line.split("│")[1].strip() for line in res.stdout.splitlines() if line.startswith("│")}
    assert {m.value for m in REGISTRY} <= cells
