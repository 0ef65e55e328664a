"""`vmferry ha enable|disable|status` and `vmferry watch`: VMs restarted on other hosts when
their host dies, after that host is fenced (docs/operations.md)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json, progress_printer
from vmferry.model.ha import HaPriority
from vmferry.service import ha as service

app = typer.Typer(help="HA restart: VMs restarted elsewhere when their host dies.",
                  no_args_is_help=True)  # fmt: skip
JSON = typer.Option(False, "--json", help="Print JSON.")


@app.command("enable")
def enable(
    vm: str = typer.Argument(..., help="The running VM to protect."),
    priority: Annotated[
        HaPriority, typer.Option("--priority", help="Restarted before VMs of lower priority.")
    ] = HaPriority.MEDIUM,
    json_out: bool = JSON,
) -> None:  # fmt: skip
    """Protect a VM: `vmferry watch` restarts it on another host, from its definition and
    shared storage, when its host dies and has been fenced."""
    record = service.enable(vm, priority)
    if json_out:
        print_json({"vm": record.vm, "enabled": True, "host": record.host,
                    "state": record.state, "priority": record.priority.value})  # fmt: skip
    else:
        console.print(f"{vm} is HA-protected ({priority} priority) on {record.host}",
                      highlight=False)  # fmt: skip


@app.command("disable")
def disable(vm: str = typer.Argument(..., help="An HA-enabled VM.")) -> None:
    """Stop protecting a VM."""
    service.disable(vm)
    console.print(f"{vm} is no longer HA-protected", highlight=False)


@app.command("status")
def status(json_out: bool = JSON) -> None:
    """The HA-enabled VMs. JSON: [{"vm", "enabled", "host", "state", "priority", "note"}]."""
    found = service.status()
    if json_out:
        print_json(found)
        return
    table = Table("VM", "host", "state", "priority", "note")
    for s in found:
        table.add_row(s.vm, s.host, s.state, s.priority, s.note or "")
    console.print(table)


def watch(
    once: bool = typer.Option(False, "--once", help="One round, then exit."),
    interval: float = typer.Option(10, "--interval", min=1, help="Seconds between rounds."),
    timeout: float = typer.Option(10, "--timeout", min=1, help="Seconds a host's libvirt "
                                  "has to answer."),
) -> None:  # fmt: skip
    """Run the HA monitor in the foreground: each round asks every host, fences a host that
    neither its libvirt nor its heartbeat answers for, and restarts its HA VMs elsewhere.
    Ctrl-C stops it between rounds."""
    note = progress_printer()
    while True:
        lines = service.watch_round(note=note, timeout_s=timeout)
        if once:
            for line in lines:
                console.print(line, highlight=False)
            return
        time.sleep(interval)
