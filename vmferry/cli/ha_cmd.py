"""`vmferry ha enable|disable|status` and `vmferry watch`: VMs restarted on other hosts when
their host dies, after that host is fenced (docs/operations.md)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from vmferry.cli.output import (
    console,
    err_console,
    print_json,
    show_plan_event,
)
from vmferry.errors import BadInputError
from vmferry.fleetops.continuous import BalancePolicy
from vmferry.fleetops.power import (
    DEFAULT_TARGET,
    DEFAULT_TOLERANCE,
    OFF_WINDOW_S,
    ON_WINDOW_S,
    DpmBand,
)
from vmferry.model.ha import HaPriority
from vmferry.service import ha as service
from vmferry.service.fleet_watch import FleetWatch, PowerPolicy, WatchPolicy
from vmferry.store import open_store

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


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


def watch(
    once: bool = typer.Option(False, "--once", help="One round, then exit."),
    rounds: int = typer.Option(0, "--rounds", min=0, help="Stop after this many rounds "
                               "(0: run until Ctrl-C)."),
    interval: float = typer.Option(10, "--interval", min=1, help="Seconds between rounds."),
    timeout: float = typer.Option(10, "--timeout", min=1, help="Seconds a host's libvirt "
                                  "has to answer."),
    balance: bool = typer.Option(False, "--balance", help="Balance the fleet continuously "
                                 "(hysteresis, persistence, cool-downs)."),
    metric: str = typer.Option("both", "--metric", help="cpu, memory or both."),
    threshold: float = typer.Option(0.1, "--threshold", help="The imbalance to reach, in "
                                    "(0, 1]; balancing starts above it x (1 + hysteresis)."),
    hysteresis: float = typer.Option(0.2, "--hysteresis", help="Margin over the threshold."),
    persist: int = typer.Option(3, "--persist", help="Rounds above the trigger before acting."),
    cooldown: float = typer.Option(600, "--cooldown", help="Seconds between balancing runs."),
    vm_cooldown: float = typer.Option(3600, "--vm-cooldown", help="Seconds a VM the "
                                      "balancer moved stays put."),
    max_moves: Annotated[int | None, typer.Option("--max-moves", help="Moves per run.")] = None,
    power: bool = typer.Option(False, "--power", help="Power management (DPM): wake standby "
                               "hosts on demand, consolidate and power off when it is low."),
    target: int = typer.Option(round(DEFAULT_TARGET * 100), "--target",
                               help="Utilisation to aim at, percent (DPM: 63)."),
    tolerance: int = typer.Option(round(DEFAULT_TOLERANCE * 100), "--tolerance",
                                  help="The band around it, percent (18)."),
    power_on_window: float = typer.Option(ON_WINDOW_S, "--power-on-window",
                                          help="Seconds of demand a wake decision reads."),
    power_off_window: float = typer.Option(OFF_WINDOW_S, "--power-off-window",
                                           help="Seconds of demand a power-off reads."),
    headroom: int = typer.Option(20, "--headroom", help="Percent of a host kept free (0-90)."),
) -> None:  # fmt: skip
    """Run the monitor in the foreground. Each round asks every host, fences a host that
    neither its libvirt nor its heartbeat answers for and restarts its HA VMs elsewhere;
    with --balance and --power it also balances the fleet and manages its hosts' power
    (docs/operations.md). Each round's actions and decisions are printed; Ctrl-C stops it
    between rounds."""
    if not 0 <= headroom <= 90:
        raise BadInputError(f"--headroom must be in 0-90 % (got {headroom})")
    policy = WatchPolicy(
        balance=BalancePolicy(threshold, hysteresis, persist, cooldown, vm_cooldown)
        if balance else None,
        power=PowerPolicy(DpmBand(target / 100, tolerance / 100), power_on_window,
                          power_off_window, headroom / 100) if power else None,
        metric=metric, max_moves=max_moves, headroom=headroom / 100,
    )  # fmt: skip
    fleet = FleetWatch(policy, open_store(), on_event=show_plan_event, timeout_s=timeout)
    limit = 1 if once else rounds
    done = 0
    try:
        while True:
            service.watch_round(note=_say, timeout_s=timeout)  # its lines as they happen
            for line in fleet.round():
                _say(line)
            done += 1
            if limit and done >= limit:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        err_console.print("watch stopped", highlight=False)
