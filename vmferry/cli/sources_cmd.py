"""`vmferry sources add|list|remove` (vSphere sources) and the vSphere form of
`vmferry inventory --source` (docs/vsphere.md)."""

from __future__ import annotations

import os
import sys

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.errors import BadInputError
from vmferry.model.vsphere import PASSWORD_ENV, VsphereSource, VsphereVm
from vmferry.service import vsphere_sources as sources_service

app = typer.Typer(help="Register and list vSphere sources (vCenter, ESXi).", no_args_is_help=True)


def password_for(source: VsphereSource) -> str:
    """``$VMFERRY_VSPHERE_PASSWORD`` when set, else asked for without echo on the terminal
    (stderr, so --json output stays clean); refused when there is no terminal to ask on."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    if not sys.stdin.isatty():
        raise BadInputError(f"no password for {source.user} at {source.host}: set "
                            f"{PASSWORD_ENV} (there is no terminal to ask on)")  # fmt: skip
    asked = typer.prompt(f"Password for {source.user} at {source.host}", hide_input=True,
                         err=True)  # fmt: skip
    return str(asked)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="A short name for the source, e.g. vc1."),
    url: str = typer.Argument(..., help="vsphere://USER@HOST[:PORT] (port 443 by default)."),
    datacenter: str | None = typer.Option(None, "--datacenter", help="Only this datacenter."),
    ca_file: str | None = typer.Option(
        None, "--ca", help="Trust this CA certificate (PEM) for the server's certificate."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Do not check the server's certificate at all."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Register a vCenter or ESXi after one login proves the URL, password and certificate.
    The password comes from VMFERRY_VSPHERE_PASSWORD or a prompt and is never stored."""
    source = sources_service.add_source(name, url, password_for, datacenter=datacenter,
                                        ca_file=ca_file, insecure=insecure)  # fmt: skip
    if json_out:
        print_json(source_json(source))
    else:
        console.print(f"added source [bold]{source.name}[/bold] ({source.url})")


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the vSphere sources."""
    sources = sources_service.list_sources()
    if json_out:
        print_json([source_json(source) for source in sources])
        return
    table = Table("name", "url", "datacenter", "certificate")
    for source in sources:
        table.add_row(source.name, source.url, source.datacenter or "-", _trust(source))
    console.print(table)


@app.command("remove")
def remove(name: str = typer.Argument(..., help="The source's name.")) -> None:
    """Forget a source (nothing in vSphere changes)."""
    sources_service.remove_source(name)
    console.print(f"removed source {name}")


def print_inventory(name: str, json_out: bool) -> None:
    """`vmferry inventory --source NAME`: the source's VMs, as a table or as JSON."""
    source = sources_service.get_source(name)
    vms = sources_service.inventory(source, password_for(source))
    if json_out:
        print_json(vms)
        return
    console.print(inventory_table(source.name, vms))


def source_json(source: VsphereSource) -> dict[str, object]:
    """A source as `sources list --json` shows it: its fields and its URL."""
    return {"name": source.name, "url": source.url, "host": source.host, "port": source.port,
            "user": source.user, "datacenter": source.datacenter, "ca_file": source.ca_file,
            "insecure": source.insecure}  # fmt: skip


def inventory_table(source: str, vms: list[VsphereVm]) -> Table:
    table = Table("source", "vm", "state", "vcpus", "memory", "guest", "disks", "nics", "cbt")
    for vm in vms:
        disks = "\n".join(f"{d.path} {_size(d.capacity_bytes)}" for d in vm.disks)
        nics = "\n".join(f"{n.mac} {n.network or '?'}" for n in vm.nics)
        table.add_row(source, vm.name, vm.power_state, str(vm.vcpus), f"{vm.memory_mb} MiB",
                      vm.guest_os or "-", disks or "-", nics or "-",
                      "yes" if vm.cbt_enabled else "no")  # fmt: skip
    return table


def _trust(source: VsphereSource) -> str:
    if source.insecure:
        return "not checked (--insecure)"
    return f"CA {source.ca_file}" if source.ca_file else "system CAs"


def _size(value: int) -> str:
    """GiB with two decimals, or MiB below one GiB (a small disk is not 0.00GiB)."""
    return f"{value / 2**30:.2f}GiB" if value >= 2**30 else f"{value / 2**20:.1f}MiB"
