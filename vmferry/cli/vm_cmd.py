"""`vmferry vm set|show|tag`."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from vmferry.cli.output import console, print_json
from vmferry.errors import BadInputError
from vmferry.service import vms as vms_service

app = typer.Typer(help="What a VM declares about itself: its service probes, its health command.",
                  no_args_is_help=True)  # fmt: skip


@app.command("set")
def set_(
    vm: str = typer.Argument(..., help="The VM's name (as libvirt knows it)."),
    probe: Annotated[
        list[str] | None,
        typer.Option(
            "--probe",
            help="A service its users reach, tried before, during and after each move: "
            "tcp:HOST:PORT, http://HOST:PORT/PATH=STATUS or icmp:HOST (repeatable).",
        ),
    ] = None,
    probe_from: str | None = typer.Option(
        None, "--probe-from", help="Where the probes run: netns:NAME (on this machine) or local."
    ),
    clear: bool = typer.Option(False, "--clear-probes", help="Forget the probes it had."),
    health_command: str | None = typer.Option(
        None,
        "--health-command",
        help="A command its QEMU guest agent runs (guest-exec) before and after each move; "
        "exit 0 means healthy. Absolute path, no shell: \"/bin/sh -c 'pidof nginx'\".",
    ),
    clear_health: bool = typer.Option(False, "--clear-health", help="Forget its command."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Declare a VM's service probes and health command."""
    done = vms_service.set_probes(vm, probe or [], probe_from, clear=clear,
                                  health_command=health_command,
                                  clear_health=clear_health)  # fmt: skip
    if json_out:
        print_json(done)
        return
    _print(done)


@app.command("show")
def show(
    vm: str = typer.Argument(...),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What a VM declares."""
    found = vms_service.show(vm)
    if json_out:
        print_json(found)
        return
    _print(found)


@app.command("tag")
def tag(
    vm: str = typer.Argument(..., help="The VM's name (as libvirt knows it)."),
    tags: Annotated[
        list[str] | None,
        typer.Argument(help="Its tags, replacing those it had: anti-affinity:GROUP, "
                       "project:NAME, any label. None: show them."),
    ] = None,
    clear: bool = typer.Option(False, "--clear", help="Remove all its tags."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:  # fmt: skip
    """Show or replace a VM's tags (placement reads anti-affinity:GROUP; roles read
    project:NAME)."""
    if clear and tags:
        raise BadInputError("give tags or --clear, not both")
    found = (vms_service.set_tags(vm, tags or []) if tags or clear
             else vms_service.tags(vm))  # fmt: skip
    if json_out:
        print_json({"vm": vm, "tags": list(found)})
        return
    console.print(f"{vm}: {' '.join(found) if found else 'no tags'}", highlight=False)


def _print(found: vms_service.VmDeclared) -> None:
    console.print(f"vm {found.vm}", highlight=False)
    if not found.probes:
        console.print("  no probes: a move is verified by liveness only", highlight=False)
    for spec in found.probes:
        console.print(f"  probe {spec}", highlight=False)
    if found.probes:
        console.print(f"  from {found.probe_from or 'this machine'}", highlight=False)
    if found.health_command:
        console.print(f"  health command (guest agent) {shlex.join(found.health_command)}",
                      highlight=False)  # fmt: skip
