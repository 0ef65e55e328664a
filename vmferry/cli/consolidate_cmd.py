"""`vmferry consolidate`: the hosts the fleet could run without and the moves that empty
them (docs/operations.md). It recommends; `--plan-out` writes the moves as a plan file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vmferry.cli.output import console, err_console, print_json, show_plan_event, write_whole
from vmferry.errors import BadInputError, MigrationFailedError
from vmferry.fleetops.model import Move
from vmferry.fleetops.plan_file import plan_yaml
from vmferry.fleetops.power import DEFAULT_TARGET, DEFAULT_TOLERANCE, DpmBand
from vmferry.service import consolidate as service
from vmferry.service.consolidate import ConsolidationReport

GIB = 2**30


def consolidate(
    headroom: int = typer.Option(
        20, "--headroom", help="Percent of a host's CPU and memory kept free (0-90)."
    ),
    metric: str = typer.Option("both", "--metric", help="cpu, memory or both."),
    max_moves: int | None = typer.Option(None, "--max-moves", help="At most this many moves."),
    target: int = typer.Option(
        round(DEFAULT_TARGET * 100), "--target", help="Utilisation to aim at, percent (DPM: 63)."
    ),
    tolerance: int = typer.Option(
        round(DEFAULT_TOLERANCE * 100), "--tolerance", help="The band around it, percent (18)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    plan_out: Annotated[
        Path | None,
        typer.Option("--plan-out", help="Write the moves as a plan file for `plan create`."),
    ] = None,
    apply: bool = typer.Option(False, "--apply", help="Carry it out: the moves as the plan "
                               "`consolidate`, the emptied hosts put in standby."),
    power_off: bool = typer.Option(False, "--power-off", help="With --apply: power the "
                                   "emptied hosts off through their power driver."),
) -> None:  # fmt: skip
    """Recommend the hosts to empty so the fleet runs on fewer (each host that stays under
    100 % - headroom and the band's top, the fleet at the target or under), and the live
    moves that empty them. Nothing moves unless --apply (then exit 4 when a move did not
    complete); no host is powered off unless --power-off.

    JSON: {"hosts_freed": [...], "moves": [{"vm", "source", "destination", "bytes"}],
    "utilisation_after": {host: utilisation}, "kept": [{"host", "why"}], "metric",
    "headroom", "target", "tolerance", "at_least_kept", "counted_at_size", "unreachable"};
    with --apply also "plan_id", "plan_status", "standby": [{"host", "powered_off", "why"}]."""
    if not 0 <= headroom <= 90:
        raise BadInputError(f"--headroom must be in 0-90 % (got {headroom})")
    band = DpmBand(target / 100, tolerance / 100)
    if power_off and not apply:
        raise BadInputError("--power-off needs --apply")
    # with --power-off a host whose power automation refuses it is not freed
    report = service.consolidate_fleet(metric=metric, headroom=headroom / 100,
                                       max_moves=max_moves, band=band,
                                       power_off=power_off)  # fmt: skip
    found = report.consolidation
    if plan_out is not None:
        if not found.moves:
            raise BadInputError(f"no moves to write to {plan_out}: no host can be emptied")
        write_whole(plan_out, plan_yaml(found.moves, report.hosts, report.vms,
                                        link_bytes_s=report.link_bytes_s,
                                        name="consolidate"))  # fmt: skip
        err_console.print(f"wrote {plan_out}: `vmferry plan create {plan_out}`, then `vmferry "
                          "plan run ID`, carry the moves out", highlight=False)  # fmt: skip
    doc = report_json(report, headroom, band)
    applied = None
    if apply:
        applied = service.apply(report, power_off=power_off, on_event=show_plan_event)
        doc |= {"plan_id": applied.plan_id, "plan_status": applied.plan_status,
                "standby": [{"host": s.host, "powered_off": s.powered_off, "why": s.why}
                            for s in applied.standby]}  # fmt: skip
    if json_out:
        print_json(doc)
    else:
        _print(report)
        for s in applied.standby if applied is not None else ():
            console.print(f"{s.host}: {s.why}", highlight=False)
    if applied is not None and applied.plan_status not in (None, "completed"):
        raise MigrationFailedError(f"plan {applied.plan_id} {applied.plan_status}; `vmferry "
                                   f"plan show {applied.plan_id}` says which move did not "
                                   "complete")  # fmt: skip


def report_json(report: ConsolidationReport, headroom: int, band: DpmBand) -> dict[str, object]:
    found = report.consolidation
    return {
        "hosts_freed": list(found.hosts_freed),
        "moves": [_move_json(m) for m in found.moves],
        "utilisation_after": {h: round(u, 4) for h, u in found.utilisation_after.items()},
        "kept": [{"host": host, "why": why} for host, why in found.kept],
        "metric": found.metric,
        "headroom": headroom,
        "target": band.target,
        "tolerance": band.tolerance,
        "at_least_kept": found.at_least_kept,
        "counted_at_size": list(report.counted_at_size),
        "unreachable": report.unreachable,
    }


def _move_json(move: Move) -> dict[str, object]:
    return {"vm": move.vm, "source": move.source, "destination": move.destination,
            "bytes": move.predicted_bytes}  # fmt: skip


def _print(report: ConsolidationReport) -> None:
    found = report.consolidation
    active = len(found.utilisation_after) + len(found.hosts_freed)
    console.print(f"{len(found.hosts_freed)} of {active} hosts can be freed with "
                  f"{len(found.moves)} moves ({found.metric}; at least {found.at_least_kept} "
                  f"must stay): {', '.join(found.hosts_freed) or 'none'}",
                  highlight=False)  # fmt: skip
    if found.moves:
        table = Table("VM", "from", "to", "sent")
        for m in found.moves:
            table.add_row(m.vm, m.source, m.destination, f"{m.predicted_bytes / GIB:.2f} GiB")
        console.print(table)
    why = dict(found.kept)
    hosts = Table("host", "utilisation after", "kept because")
    for host, used in found.utilisation_after.items():
        hosts.add_row(host, f"{used:.0%}", why.get(host, ""))
    for host, reason in found.kept:
        if host not in found.utilisation_after:
            hosts.add_row(host, "", reason)
    console.print(hosts)
    if report.counted_at_size:
        err_console.print("counted at their size (no stored profile; `vmferry profile`): "
                          + ", ".join(report.counted_at_size), highlight=False)  # fmt: skip
    for host, reason in report.unreachable.items():
        err_console.print(f"left out: {host}: {reason}", highlight=False)
