"""`vmferry balance`: the moves that would even out the fleet's load (docs/operations.md)."""

from __future__ import annotations

import typer
from rich.table import Table

from vmferry.cli.output import console, err_console, print_json
from vmferry.fleetops.imbalance import host_loads
from vmferry.model.jsonable import to_jsonable
from vmferry.service.balance import BalanceReport
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
) -> None:
    """Recommend the fewest, cheapest live moves that bring the fleet's load imbalance under
    the threshold, from the hosts now and the VMs' stored profiles. Nothing moves.

    JSON: {"metric", "threshold", "imbalance_before", "imbalance_after", "stop", "moves":
    [{"vm", "source", "destination", "predicted_bytes", "predicted_seconds"}], "unmoved",
    "counted_at_size", "unreachable", "hosts": [{"name", "load"}]}."""
    report = balance_service(metric=metric, threshold=threshold, max_moves=max_moves,
                             headroom=headroom / 100)  # fmt: skip
    doc = report_json(report)
    if json_out:
        print_json(doc)
        return
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
    }
