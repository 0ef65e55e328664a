"""`vmferry hosts ...` and `vmferry inventory`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.client.remote import remote_api, remote_url
from vmferry.errors import BadInputError, HostUnreachableError, NoRemoteFormError
from vmferry.model import VmRecord
from vmferry.service import hosts as hosts_service
from vmferry.service.fleet import fleet_inventory
from vmferry.store import open_store

if TYPE_CHECKING:
    from vmferry.client.api import Inventory

app = typer.Typer(help="Register and list the libvirt hosts vmferry manages.", no_args_is_help=True)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="A short name for the host, e.g. kvm1."),
    uri: str = typer.Argument(..., help="libvirt URI, e.g. qemu+ssh://root@kvm1/system."),
    migration_uri: str | None = typer.Option(
        None, "--migration-uri", help="Where migration streams go, e.g. tcp://10.0.1.11."
    ),
    shell: str | None = typer.Option(
        None,
        "--shell",
        help="How vmferry runs nft/tc on the host: local, netns:NAME or "
        "ssh://[USER@]HOST[:PORT][?keyfile=PATH&known_hosts=PATH].",
    ),
    link_mbps: int | None = typer.Option(
        None, "--link-mbps", help="The migration link's rate (Mbit/s), if known."
    ),
    migration_tls: bool = typer.Option(
        False, "--migration-tls", help="The host's QEMU has migration certificates."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Register a host; its libvirt must answer first."""
    host = hosts_service.add_host(name, uri, migration_uri, shell=shell, link_mbps=link_mbps,
                                  migration_tls=migration_tls)  # fmt: skip
    if json_out:
        print_json(host)
    else:
        console.print(f"added host [bold]{host.name}[/bold] ({host.uri})")


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered hosts."""
    api = remote_api()
    if api is not None:
        with api:
            hosts = api.hosts()
    else:
        hosts = hosts_service.list_hosts()
    if json_out:
        print_json(hosts)
        return
    table = Table("name", "uri", "migration uri", "shell", "link", "migration tls")
    for host in hosts:
        link = f"{host.link_mbps} Mbit/s" if host.link_mbps else "-"
        table.add_row(host.name, host.uri, host.migration_uri or "-", host.shell or "-", link,
                      "yes" if host.migration_tls else "no")  # fmt: skip
    console.print(table)


@app.command("remove")
def remove(name: str = typer.Argument(..., help="The host's name.")) -> None:
    """Forget a host (nothing on the host changes)."""
    hosts_service.remove_host(name)
    console.print(f"removed host {name}")


def inventory(
    host: str | None = typer.Option(None, "--host", help="Only this host."),
    source: str | None = typer.Option(
        None, "--source", help="The VMs of this vSphere source instead (`vmferry sources`)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every VM on the registered hosts, as libvirt reports it now; with --source, every VM
    of a vSphere source, as vSphere reports it now."""
    if source is not None:
        if host is not None:
            raise BadInputError("--host and --source exclude each other: one inventory a run")
        if remote_url() is not None:
            raise NoRemoteFormError("`vmferry inventory --source` has no remote form yet; "
                                    "unset VMFERRY_URL to run it locally")  # fmt: skip
        from vmferry.cli.sources_cmd import print_inventory  # pyvmomi only when asked for

        print_inventory(source, json_out)
        return
    api = remote_api()
    if api is not None:
        with api:
            order = [host] if host is not None else [h.name for h in api.hosts()]
            records, unreachable = remote_inventory(api.vms(host), order)
    else:
        store = open_store()
        fleet = fleet_inventory(store, host)
        order = [host] if host is not None else [h.name for h in store.list_hosts()]
        records = _ordered(fleet.records, order)
        unreachable = [fleet.unreachable[n] for n in order if n in fleet.unreachable]
    if unreachable and host is not None:  # the one host asked for: nothing to list
        raise HostUnreachableError(unreachable[0])
    if json_out:
        print_json(records)
    else:
        console.print(inventory_table(records))
    if unreachable:  # the others' VMs are listed; the exit code says the list is partial
        raise HostUnreachableError("; ".join(unreachable) + " (not listed: the VMs of the "
                                   "hosts that answered are)")  # fmt: skip


def remote_inventory(found: Inventory, hosts: list[str]) -> tuple[list[VmRecord], list[str]]:
    """The server's inventory as the local one gives it: in the order of ``hosts`` (the
    store's), each host's VMs by name, and why each host that did not answer did not, in
    that order."""
    position = {name: index for index, name in enumerate(hosts)}
    down = sorted(found.unreachable, key=lambda name: (position.get(name, len(hosts)), name))
    return _ordered(found.records, hosts), [found.unreachable[name] for name in down]


def _ordered(records: list[VmRecord], hosts: list[str]) -> list[VmRecord]:
    """In the order of ``hosts`` (the store's), each host's VMs by name."""
    position = {name: index for index, name in enumerate(hosts)}
    return sorted(records, key=lambda r: (position.get(r.host, len(hosts)), r.spec.name))


def inventory_table(records: list[VmRecord]) -> Table:
    table = Table("host", "vm", "state", "vcpus", "memory", "cpu", "disks", "nics", "blockers")
    for rec in records:
        spec = rec.spec
        topo = spec.topology
        disks = "\n".join(
            f"{d.target} {d.device} {d.bus} {d.format or '?'} "
            f"{_gib(d.capacity_bytes)} {d.source or '(empty)'}"
            for d in spec.disks
        )
        nics = "\n".join(f"{n.mac} {n.model or '?'} {n.network or n.bridge or n.kind}"
                         for n in spec.nics)  # fmt: skip
        blockers = [f"hostdev {h.kind} {h.address}" for h in spec.host_devices]
        blockers += [f"pin vcpu{p.vcpu}->{p.cpuset}" for p in spec.vcpu_pins]
        blockers += [f"media {d.target} {d.source}" for d in spec.removable_media if d.source]
        if not rec.devices_read:
            disks = nics = "(not read: held for a migration)"
        table.add_row(
            rec.host, spec.name, str(rec.state),
            f"{spec.vcpus} ({topo.sockets}s/{topo.cores}c/{topo.threads}t)",
            f"{spec.memory_bytes // 2**20} MiB", spec.cpu_model or spec.cpu_mode or "-",
            disks or "-", nics or "-", "\n".join(blockers) or "-",
        )  # fmt: skip
    return table


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**30:.2f}GiB"
