"""`vmferry host maintenance enter|exit|status`: empty a host for maintenance, keep VMs off
it, take it back (docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vmferry.cli.output import console, err_console, print_json, show_plan_event
from vmferry.errors import BlockedError, MigrationFailedError
from vmferry.model.ha import HostPower
from vmferry.model.jsonable import to_jsonable
from vmferry.model.maintenance import MaintenanceState
from vmferry.service import ha as service_ha
from vmferry.service import maintenance as service
from vmferry.service.maintenance import MaintenanceOutcome

app = typer.Typer(help="One host's operations: maintenance, power.", no_args_is_help=True)
maintenance_app = typer.Typer(
    help="Empty a host for maintenance, keep VMs off it, take it back.", no_args_is_help=True
)
app.add_typer(maintenance_app, name="maintenance")
power_app = typer.Typer(help="A host's power driver (HA fencing): set it, ask it, use it.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(power_app, name="power")
JSON = typer.Option(False, "--json", help="Print JSON.")
GIB = 2**30


@maintenance_app.command("enter")
def enter(
    host: str = typer.Argument(..., help="The registered host to empty."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the moves; change nothing."),
    metric: str = typer.Option("both", "--metric", help="cpu, memory or both: what 'least "
                               "loaded' means when placing its VMs."),
    headroom: int = typer.Option(20, "--headroom", help="Percent of each destination's CPU "
                                 "and memory left free."),
    allow_cold: bool = typer.Option(False, "--allow-cold", help="A VM that can move neither "
                                    "live nor warm is shut down and moved cold."),
    json_out: bool = JSON,
) -> None:  # fmt: skip
    """Mark the host so nothing is placed on it, then move each of its running VMs to the
    least loaded host that may take it, as a plan: live, or warm where pre-flight blocks a
    live move, or cold with --allow-cold. Exit 3 (nothing moved, the host left 'entering')
    when a VM cannot be placed or moved; 4 when a move failed.

    JSON: {"host", "dry_run", "state", "note", "moves": [{"vm", "source", "destination",
    "predicted_bytes", "predicted_seconds", "strategy", "why"}], "stuck", "plan_id",
    "plan_status", "counted_at_size"}."""

    outcome = service.enter(host, dry_run=dry_run, metric=metric, headroom=headroom / 100,
                            allow_cold=allow_cold, on_event=show_plan_event)  # fmt: skip
    if json_out:
        print_json(outcome_json(outcome))
    else:
        _print(outcome)
    if outcome.counted_at_size:
        err_console.print("counted at their size (no stored profile; `vmferry profile --host "
                          f"{host}`): " + ", ".join(outcome.counted_at_size),
                          highlight=False)  # fmt: skip
    if outcome.evacuation.stuck and not dry_run:
        raise BlockedError(f"{host} stays entering maintenance, nothing moved: "
                           + "; ".join(outcome.evacuation.stuck))  # fmt: skip
    state = outcome.state
    if not dry_run and (state is None or state.state is not MaintenanceState.IN_MAINTENANCE):
        raise MigrationFailedError(f"{host} stays entering maintenance: "
                                   f"{state.note if state else 'not marked'}")  # fmt: skip


@maintenance_app.command("exit")
def exit_(host: str = typer.Argument(..., help="The host to take back into service.")) -> None:
    """Take the host back into service: VMs may be placed on it again."""
    was = service.exit_maintenance(host)
    console.print(f"{host} is back in service" if was else f"{host} was not in maintenance",
                  highlight=False)  # fmt: skip


@maintenance_app.command("status")
def status(json_out: bool = JSON) -> None:
    """The hosts in maintenance or entering it."""
    held = service.status()
    if json_out:
        print_json(to_jsonable(held))
        return
    table = Table("host", "state", "since", "note")
    for h in held:
        table.add_row(h.host, str(h.state), h.since, h.note or "")
    console.print(table)


def outcome_json(outcome: MaintenanceOutcome) -> dict[str, object]:
    state = outcome.state
    return {
        "host": outcome.host,
        "dry_run": outcome.dry_run,
        "state": None if state is None else str(state.state),
        "note": None if state is None else state.note,
        "moves": [
            {
                **to_jsonable(m),
                "strategy": outcome.strategies.get(m.vm, "live"),
                "why": outcome.why.get(m.vm),
            }
            for m in outcome.evacuation.moves
        ],
        "stuck": list(outcome.evacuation.stuck),
        "plan_id": outcome.plan_id,
        "plan_status": outcome.plan_status,
        "counted_at_size": list(outcome.counted_at_size),
    }


def _print(outcome: MaintenanceOutcome) -> None:
    moves = outcome.evacuation.moves
    if outcome.evacuation.stuck and not outcome.dry_run:
        console.print(f"{outcome.host}: nothing moved, a VM cannot be placed", highlight=False)
    else:
        verb = "would move" if outcome.dry_run else "moved"
        console.print(f"{outcome.host}: {verb} {len(moves)} VMs", highlight=False)
    if moves:
        table = Table("VM", "to", "how", "predicted", "sent")
        for m in moves:
            table.add_row(m.vm, m.destination, outcome.strategies.get(m.vm, "live"),
                          f"{m.predicted_seconds:.1f} s",
                          f"{m.predicted_bytes / GIB:.2f} GiB")  # fmt: skip
        console.print(table)
    for line in outcome.evacuation.stuck:
        console.print(f"  cannot move {line}", highlight=False)
    if outcome.state is not None:
        console.print(f"{outcome.host} is {outcome.state.state}"
                      + (f": {outcome.state.note}" if outcome.state.note else ""),
                      highlight=False)  # fmt: skip


@power_app.command("set")
def power_set(
    host: str = typer.Argument(..., help="The registered host."),
    on: str = typer.Option("", "--on", help="The command that powers it on."),
    off: str = typer.Option("", "--off", help="The command that powers it off."),
    state: str = typer.Option("", "--status", help="The command that prints on or off."),
    redfish: str = typer.Option("", "--redfish", help="Instead of commands: the BMC's Redfish "
                                "ComputerSystem URL, https://BMC/redfish/v1/Systems/ID."),
    user: str = typer.Option("", "--user", help="Redfish: the BMC user."),
    password_env: str = typer.Option("", "--password-env", help="Redfish: the environment "
                                     "variable holding its password (never stored)."),
    ca: Annotated[Path | None, typer.Option("--ca", help="Redfish: the CA that signed the "
                                            "BMC's certificate (default: the system's).")] = None,
    insecure: bool = typer.Option(False, "--insecure", help="Redfish: do not check the BMC's "
                                  "certificate."),
    timeout: float = typer.Option(60, "--timeout", min=1, help="Seconds each may take."),
) -> None:  # fmt: skip
    """Record how vmferry powers the host off (to fence it) and on: commands run without a
    shell, e.g. `ipmitool -I lanplus -H BMC -U admin -E chassis power off`, or the BMC's
    Redfish API (`--redfish URL --user U --password-env VAR`)."""
    if redfish:
        power = HostPower(host, timeout_s=timeout, driver="redfish", url=redfish, user=user,
                          password_env=password_env, ca=str(ca) if ca else None,
                          insecure=insecure)  # fmt: skip
    else:
        power = HostPower(host, on, off, state, timeout)
    service_ha.set_power(power)
    console.print(f"{host}: power driver recorded ({power.describe()})", highlight=False,
                  soft_wrap=True)  # fmt: skip


@power_app.command("status")
def power_status(host: str = typer.Argument(..., help="The registered host.")) -> None:
    """Ask the host's power driver: prints on or off."""
    console.print(service_ha.power(host, "status"), highlight=False)


@power_app.command("on")
def power_on(host: str = typer.Argument(..., help="The registered host.")) -> None:
    """Power the host on through its driver; prints its state after."""
    console.print(service_ha.power(host, "on"), highlight=False)


@power_app.command("off")
def power_off(host: str = typer.Argument(..., help="The registered host.")) -> None:
    """Power the host off through its driver (its VMs stop at once); prints its state after."""
    console.print(service_ha.power(host, "off"), highlight=False)


@power_app.command("automation")
def power_automation(
    host: str = typer.Argument(..., help="The registered host with a power driver."),
    level: str = typer.Argument(..., help="automatic, manual or disabled."),
) -> None:
    """Who may power the host on or off through its driver: automatic (vmferry's own loops,
    `watch --power` and HA fencing, and people), manual (only a person's command: `host
    power on|off`, `host wake`, `consolidate --apply --power-off`) or disabled (nobody).
    Refused actions exit 3 and are recorded in `vmferry audit` as every power action is."""
    driver = service_ha.set_automation(host, level)
    console.print(f"{host}: power automation {driver.automation}", highlight=False)


@app.command("wake")
def wake(
    host: str = typer.Argument(..., help="A host in standby (`vmferry consolidate`)."),
) -> None:
    """Power a host in standby on through its driver, wait for its libvirt, and take it back
    into service."""
    from vmferry.service.consolidate import wake as wake_service

    console.print(wake_service(host), highlight=False)
