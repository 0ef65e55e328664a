"""`vmferry netprofile ...`: named port profiles (rate limits, ACL, security level)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.client.remote import remote_api
from vmferry.model.jsonable import to_jsonable
from vmferry.model.netprofile import PortProfile
from vmferry.netprofile.spec import (
    describe,
    format_acl_rule,
    make_profile,
    profile_from_json,
    profile_to_json,
)
from vmferry.service import netprofile as service

app = typer.Typer(
    help="Port profiles: the network a VM's NIC gets, kept by name and moved with the VM.",
    no_args_is_help=True,
)
JSON = typer.Option(False, "--json", help="Print JSON.")
ALLOW = typer.Option(
    None, "--allow", help="ACL rule PROTO[:PORTS][@PEER], e.g. tcp:7,9@198.18.2.0/24 (repeat)."
)


def _kib(value: Any) -> str:
    return f"{value.average_kib_s} KiB/s" if value is not None else "-"


def _acl(profile: PortProfile) -> str:
    if profile.acl is None:
        return "(no filtering)"
    return " ".join(format_acl_rule(r) for r in profile.acl) or "(nothing allowed)"


@app.command("list")
def list_(json_out: bool = JSON) -> None:
    """The named profiles."""
    api = remote_api()
    if api is not None:
        with api:
            profiles = [profile_from_json(p) for p in api.netprofiles()]
    else:
        profiles = service.list_profiles()
    if json_out:
        print_json([profile_to_json(p) for p in profiles])
        return
    table = Table("name", "network", "in", "out", "acl", "level")
    for p in profiles:
        table.add_row(
            p.name, p.network, _kib(p.inbound), _kib(p.outbound), _acl(p), p.security_level
        )
    console.print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="The profile's name."), json_out: bool = JSON
) -> None:
    """One named profile."""
    api = remote_api()
    if api is not None:
        with api:
            profile = profile_from_json(api.netprofile(name))
    else:
        profile = service.get_profile(name)
    if json_out:
        print_json(profile_to_json(profile))
    else:
        console.print(describe(profile), highlight=False)


@app.command("define")
def define(
    name: str = typer.Argument(..., help="1-24 lowercase letters, digits or '-'."),
    network: str = typer.Option(..., "--network", help="The libvirt network (portgroup home)."),
    inbound: int | None = typer.Option(None, "--in-kib-s", help="Limit to the VM, KiB/s."),
    outbound: int | None = typer.Option(None, "--out-kib-s", help="Limit from the VM, KiB/s."),
    burst: int | None = typer.Option(None, "--burst-kib", help="Burst for both limits, KiB."),
    allow: list[str] | None = ALLOW,
    no_acl: bool = typer.Option(
        False, "--no-acl", help="No filtering (the default without --allow)."
    ),
    level: str = typer.Option("default", "--level", help="Security-level label."),
    vni: int | None = typer.Option(None, "--vni", help="VXLAN VNI of the segment, where used."),
    json_out: bool = JSON,
) -> None:
    """Define (or replace) a named profile. Nothing changes on any host until `apply`."""
    acl = None if no_acl or allow is None else list(allow)
    profile = make_profile(
        name,
        network,
        inbound_kib_s=inbound,
        outbound_kib_s=outbound,
        burst_kib=burst,
        acl=acl,
        security_level=level,
        vni=vni,
    )
    api = remote_api()
    if api is not None:  # the profile is checked here first, as locally; the server again
        body = {"network": network, "in_kib_s": inbound, "out_kib_s": outbound,
                "burst_kib": burst, "allow": acl, "level": level, "vni": vni}  # fmt: skip
        with api:
            profile = profile_from_json(api.define_netprofile(name, body))
    else:
        service.save_profile(profile)
    if json_out:
        print_json(profile_to_json(profile))
    else:
        console.print(f"defined {describe(profile)}", highlight=False)


@app.command("capture")
def capture(
    vm: str = typer.Argument(..., help="A VM on a registered host."),
    json_out: bool = JSON,
) -> None:
    """Read the profiles of a VM's NICs from its host (portgroup bandwidth, vmferry's rules)
    and keep them by name."""
    api = remote_api()
    if api is not None:
        with api:
            doc = api.capture_netprofiles(vm)
    else:
        doc = service.capture_json(service.capture(vm))
    if json_out:
        print_json(doc)
        return
    table = Table("mac", "segment", "profile", "addresses")
    for port in doc["ports"]:
        seg = f"{port['segment']['network'] or '-'}/{port['segment']['bridge'] or '-'}"
        table.add_row(port["mac"], seg, port["profile"] or "-", " ".join(port["addresses"]) or "-")
    console.print(table)
    for profile in doc["profiles"]:
        console.print(f"kept {describe(profile_from_json(profile))}", highlight=False)


@app.command("apply")
def apply(
    name: str = typer.Argument(..., help="The profile's name."),
    host: str = typer.Option(..., "--host", help="A registered host."),
    json_out: bool = JSON,
) -> None:
    """Put a named profile on a host: the portgroup with its rate limits, and its ACL rules for
    the VMs there that use it."""
    api = remote_api()
    if api is not None:
        with api:
            doc = api.apply_netprofile(name, host)
    else:
        doc = to_jsonable(service.apply(name, host))
    if json_out:
        print_json(doc)
    else:
        console.print(
            f"{name} on {host}: portgroup {doc['portgroup']}, rules {doc['rules']}"
            + (f", bound {', '.join(doc['bound_macs'])}" if doc["bound_macs"] else ""),
            highlight=False,
        )


@app.command("remove")
def remove(
    name: str = typer.Argument(..., help="The profile's name."),
    host: str | None = typer.Option(None, "--host", help="Remove it from this host only."),
    json_out: bool = JSON,
) -> None:
    """Remove a profile from a host (refused while a VM there uses it), or without --host
    forget the named profile."""
    api = remote_api()
    if api is not None:
        with api:
            answer = api.delete_netprofile(name) if host is None else (
                api.remove_netprofile_from(name, host))  # fmt: skip
        removed = list(answer["removed"])
    elif host is None:
        service.delete_profile(name)
        removed = [f"named profile {name}"]
    else:
        removed = service.remove(name, host)
    if json_out:
        print_json({"removed": removed})
    else:
        console.print("removed " + ("; ".join(removed) or "nothing"), highlight=False)
