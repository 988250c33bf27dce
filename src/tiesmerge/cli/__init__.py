"""The `tiesmerge` command line (typer): one file per command group, thin commands."""
