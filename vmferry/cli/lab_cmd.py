"""`vmferry lab ...`: the local multi-host lab."""

from __future__ import annotations

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json, progress_printer
from vmferry.errors import BadInputError
from vmferry.lab import guests, lifecycle
from vmferry.lab import topology as topo

app = typer.Typer(help="The local multi-host KVM lab (root; namespaces + libvirtd).",
                  no_args_is_help=True)  # fmt: skip
guest_app = typer.Typer(help="Lab guests: tiny VMs with a heartbeat and a memory workload.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(guest_app, name="guest")
host_app = typer.Typer(help="Lab host faults: a host killed or cut off, and restored (HA tests).",
                       no_args_is_help=True)  # fmt: skip
app.add_typer(host_app, name="host")


@host_app.command("fail")
def host_fail(
    host: str = typer.Argument(..., help="The lab host."),
    mode: str = typer.Option(..., "--mode", help="kill: every process of the host's "
                             "namespace; partition: its management and migration links "
                             "down, its VMs left running."),
) -> None:  # fmt: skip
    """Make a lab host fail (undo with `lab host restore`)."""
    from vmferry.lab.host_faults import fail_host

    killed = fail_host(host, mode)
    console.print(f"{host} failed ({mode})" + (f": {len(killed)} processes killed"
                                               if killed else ""), highlight=False)  # fmt: skip


@host_app.command("restore")
def host_restore(host: str = typer.Argument(..., help="The failed lab host.")) -> None:
    """Undo a lab host's failure: links up, or its daemons started again (its guests stay
    off)."""
    from vmferry.lab.host_faults import restore_host

    restore_host(host)
    console.print(f"{host} restored", highlight=False)


@host_app.command("power")
def host_power(
    host: str = typer.Argument(..., help="The lab host."),
    action: str = typer.Argument(..., help="on, off or status."),
) -> None:
    """The lab's power driver for HA fencing: off cuts the host's power (every process of
    its namespace killed), on starts it again; prints on or off (use it as a host's power
    commands: `vmferry host power set kvm1 --off 'vmferry lab host power kvm1 off' ...`)."""
    from vmferry.lab.host_faults import power_host

    console.print(power_host(host, action), highlight=False)


@app.command("up")
def up(
    hosts: int = typer.Option(2, "--hosts", help="How many hosts (1-8)."),
    link_mbps: int = typer.Option(400, "--link-mbps", help="Migration link rate, Mbit/s."),
    segments: str | None = typer.Option(
        None, "--segments", help="VM segment of each host, e.g. 1,1,2 (default: all on 1)."
    ),
    insecure_tcp: bool = typer.Option(
        False,
        "--insecure-tcp",
        help="Reach the hosts' libvirtd over plain TCP with no authentication (lab only).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the lab status as JSON."),
) -> None:
    """Bring the lab up and register its hosts (reached over TLS with the lab's own CA)."""
    try:
        per_host = topo.parse_segments(segments, hosts) if segments else None
    except ValueError as exc:
        raise BadInputError(str(exc)) from exc
    lifecycle.up(hosts, link_mbps, progress=progress_printer(), segments=per_host,
                 transport="tcp" if insecure_tcp else "tls")  # fmt: skip
    _show_status(json_out)


@app.command("down")
def down() -> None:
    """Stop every process the lab started and remove everything it made."""
    if lifecycle.down(progress=progress_printer()):
        console.print("lab is down")
    else:
        console.print("no lab was up")


@app.command("status")
def status(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Hosts with their URIs and migration addresses, links with rates, running VMs."""
    _show_status(json_out)


def _show_status(json_out: bool) -> None:
    st = lifecycle.status()
    if json_out:
        print_json(st)
        return
    if not st.hosts:
        console.print("no lab is up; `vmferry lab up` starts one")
        return
    console.print(f"lab is {'[green]up[/green]' if st.up else '[red]not fully running[/red]'}; "
                  f"client namespace at {st.client_addr}")  # fmt: skip
    table = Table("host", "libvirt uri", "migration uri", "libvirtd", "link", "running VMs")
    for host, link in zip(st.hosts, st.links, strict=True):
        table.add_row(host.name, host.uri, host.migration_uri,
                      "running" if host.libvirtd_running else "[red]down[/red]",
                      f"{link.rate_mbps} Mbit/s" if link.rate_mbps else "-",
                      ", ".join(host.vms) or "-")  # fmt: skip
    console.print(table)


@guest_app.command("create")
def guest_create(
    name: str = typer.Argument(..., help="The guest's name."),
    host: str = typer.Option(..., "--host", help="The lab host to start it on."),
    memory_mb: int = typer.Option(512, "--memory-mb", help="Guest memory."),
    working_set_mb: int = typer.Option(256, "--working-set-mb", help="Memory the workload keeps."),
    dirty_mb_s: int = typer.Option(0, "--dirty-mb-s", help="Rewrite rate of the working set."),
    portgroup: str | None = typer.Option(
        None, "--portgroup", help="Portgroup (port profile) of vmnet for the NIC."
    ),
    disk_pool: str = typer.Option(
        "shared",
        "--disk-pool",
        help="shared: the pool every lab host sees; local: the host's own pool (default).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create and start a lab guest; returns once its heartbeat is seen."""
    record = guests.create_guest(name, host, memory_mb=memory_mb, working_set_mb=working_set_mb,
                                 dirty_mb_s=dirty_mb_s, portgroup=portgroup,
                                 disk_pool=disk_pool, progress=progress_printer())  # fmt: skip
    if json_out:
        print_json(record)
    else:
        console.print(f"guest [bold]{record.name}[/bold] is running on {record.host} at "
                      f"{record.address} ({record.mac}); console: {record.console}")  # fmt: skip


@guest_app.command("delete")
def guest_delete(name: str = typer.Argument(..., help="The lab guest's name.")) -> None:
    """Stop and remove a lab guest (wherever it runs now), its disk and its console log."""
    guests.delete_guest(name, progress=progress_printer())
    console.print(f"guest {name} removed")


@guest_app.command("build")
def guest_build(
    force: bool = typer.Option(False, "--force", help="Rebuild even if the cache is current."),
) -> None:
    """Build (or reuse) the lab guest's kernel and initramfs."""
    from vmferry.lab.guest_image import build_guest_image, default_cache_dir

    image = build_guest_image(default_cache_dir(), progress=progress_printer(), force=force)
    console.print(f"guest image: kernel {image.kernel} ({image.kernel_version}), "
                  f"initrd {image.initrd}")  # fmt: skip
