"""`vmferry settings ...`."""

from __future__ import annotations

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.service import settings as settings_service

app = typer.Typer(help="Read and change vmferry's settings.", no_args_is_help=True)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every setting, its value and its default."""
    values = settings_service.list_settings()
    if json_out:
        print_json(values)
        return
    table = Table("key", "value", "default", "takes")
    for s in values:
        table.add_row(s.key, s.value if s.changed else f"{s.value} (default)", s.default,
                      s.takes)  # fmt: skip
    console.print(table)


@app.command("set")
def set_(
    key: str = typer.Argument(..., help="e.g. migration.tls"),
    value: str = typer.Argument(..., help="e.g. required"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Change a setting."""
    changed = settings_service.set_setting(key, value)
    if json_out:
        print_json(changed)
    else:
        console.print(f"{changed.key} = {changed.value}")


@app.command("unset")
def unset(
    key: str = typer.Argument(..., help="e.g. migration.tls"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Put a setting back to its default."""
    back = settings_service.unset_setting(key)
    if json_out:
        print_json(back)
    else:
        console.print(f"{back.key} = {back.value} (default)")
