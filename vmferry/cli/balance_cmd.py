"""`vmferry balance`: the moves that would even out the fleet's load (docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vmferry.cli.output import console, err_console, print_json, show_plan_event, write_whole
from vmferry.errors import BadInputError, MigrationFailedError
from vmferry.fleetops.imbalance import host_loads
from vmferry.fleetops.plan_file import plan_yaml
from vmferry.model.jsonable import to_jsonable
from vmferry.service.balance import BalanceReport
from vmferry.service.balance import apply as apply_service
from vmferry.service.balance import balance as balance_service

GIB = 2**30


def balance(
    metric: str = typer.Option("both", "--metric", help="cpu, memory or both."),
    threshold: float = typer.Option(
        0.1, "--threshold", help="The imbalance to reach: the std of host loads, in (0, 1]."
    ),
    max_moves: int | None = typer.Option(None, "--max-moves", help="At most this many moves."),
    headroom: int = typer.Option(
        20, "--headroom", help="Percent of a host's CPU and memory a move leaves free."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    plan_out: Annotated[
        Path | None,
        typer.Option("--plan-out", help="Write the moves as a plan file for `plan create`."),
    ] = None,
    apply: bool = typer.Option(
        False, "--apply", help="Carry the moves out now, as the plan `balance` (live moves)."
    ),
) -> None:
    """Recommend the fewest, cheapest live moves that bring the fleet's load imbalance under
    the threshold, from the hosts now and the VMs' stored profiles. Nothing moves unless
    --apply: then the moves run as a plan, and exit 4 when it did not complete.

    JSON: {"metric", "threshold", "imbalance_before", "imbalance_after", "stop", "moves":
    [{"vm", "source", "destination", "predicted_bytes", "predicted_seconds"}], "unmoved",
    "counted_at_size", "unreachable", "hosts": [{"name", "load"}], "plan_id",
    "plan_status"} (the last two null without --apply)."""
    report = balance_service(metric=metric, threshold=threshold, max_moves=max_moves,
                             headroom=headroom / 100)  # fmt: skip
    doc = report_json(report)
    if plan_out is not None:
        if not report.recommendation.moves:
            raise BadInputError(f"no moves to write to {plan_out}: the fleet is "
                                f"{report.recommendation.stop}")  # fmt: skip
        text = plan_yaml(report.recommendation.moves, report.hosts, report.vms,
                         link_bytes_s=report.link_bytes_s)  # fmt: skip
        write_whole(plan_out, text)
        err_console.print(f"wrote {plan_out}: `vmferry plan create {plan_out}`, then `vmferry "
                          "plan run ID`, carry the moves out", highlight=False)  # fmt: skip
    if apply:
        if not report.recommendation.moves:  # balanced already: nothing to carry out
            err_console.print(f"nothing to apply: the fleet is {report.recommendation.stop}",
                              highlight=False)  # fmt: skip
        else:
            doc["plan_id"], doc["plan_status"] = apply_service(report, on_event=show_plan_event)
    if json_out:
        print_json(doc)
    else:
        _print(report, doc)
    if doc["plan_status"] not in (None, "completed"):
        plan = doc["plan_id"]
        raise MigrationFailedError(f"plan {plan} {doc['plan_status']}; `vmferry plan show "
                                   f"{plan}` says which move did not complete")  # fmt: skip


def _print(report: BalanceReport, doc: dict[str, object]) -> None:
    rec = report.recommendation
    console.print(f"imbalance ({rec.metric}): {rec.imbalance_before:.3f} now, "
                  f"{rec.imbalance_after:.3f} after {len(rec.moves)} moves "
                  f"(threshold {rec.threshold:g}; {rec.stop})", highlight=False)  # fmt: skip
    if rec.moves:
        table = Table("VM", "from", "to", "predicted", "sent")
        for m in rec.moves:
            table.add_row(m.vm, m.source, m.destination, f"{m.predicted_seconds:.1f} s",
                          f"{m.predicted_bytes / GIB:.2f} GiB")  # fmt: skip
        console.print(table)
    for line in rec.unmoved:
        console.print(f"  {line}", highlight=False)
    if report.counted_at_size:
        err_console.print("counted at their size (no stored profile; `vmferry profile`): "
                          + ", ".join(report.counted_at_size), highlight=False)  # fmt: skip
    for host, why in report.unreachable.items():
        err_console.print(f"left out: {host}: {why}", highlight=False)
    if doc["plan_id"] is not None:
        console.print(f"plan {doc['plan_id']} {doc['plan_status']}", highlight=False)


def report_json(report: BalanceReport) -> dict[str, object]:
    rec = report.recommendation
    loads = host_loads(list(report.hosts), list(report.vms), rec.metric)
    return {
        "metric": rec.metric,
        "threshold": rec.threshold,
        "imbalance_before": rec.imbalance_before,
        "imbalance_after": rec.imbalance_after,
        "stop": rec.stop,
        "moves": to_jsonable(list(rec.moves)),
        "unmoved": list(rec.unmoved),
        "counted_at_size": list(report.counted_at_size),
        "unreachable": report.unreachable,
        "hosts": [{"name": name, "load": load} for name, load in loads.items()],
        "plan_id": None,
        "plan_status": None,
    }
