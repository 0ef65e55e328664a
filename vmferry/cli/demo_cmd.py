"""`vmferry demo`."""

from __future__ import annotations

import typer
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from vmferry.cli.check_cmd import report_json
from vmferry.cli.hosts_cmd import inventory_table
from vmferry.cli.migrate_cmd import progress_table, result_json, result_table
from vmferry.cli.output import console, err_console, print_json, progress_printer
from vmferry.engine.convergence import PolicyState
from vmferry.errors import MigrationFailedError, VmferryError
from vmferry.lab.demo import run_demo
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import JobStatus, ProgressSample


def demo(
    watch_s: float = typer.Option(10.0, "--watch", help="Seconds to watch the guest."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Start the lab and a guest with a memory workload, and show what vmferry sees."""
    with Live(console=err_console, transient=True, refresh_per_second=4) as live:

        def show(sample: ProgressSample, state: PolicyState) -> None:
            live.update(progress_table(sample, state))

        report = run_demo(progress_printer(), watch_s=watch_s, on_progress=show)
    obs = report.observation
    moved = report.migration
    if json_out:
        print_json({
            "lab": to_jsonable(report.lab),
            "guest": to_jsonable(report.guest),
            "observation": to_jsonable(report.observation),
            "check": report_json(report.check),
            "migration": result_json(moved),
            "inventory": to_jsonable(list(report.inventory)),
        })  # fmt: skip
    else:
        table = Table(show_header=False, box=None)
        table.add_row("guest", f"{report.guest.name} on {report.guest.host}, {report.guest.address}"
                      f" ({report.guest.mac})")  # fmt: skip
        table.add_row("heartbeat", f"{obs.heartbeats} beats in {obs.seconds:g} s (seq "
                      f"{obs.first_seq}..{obs.last_seq}), largest gap {obs.heartbeat_max_gap_ms} ms"
                      " on the host clock")  # fmt: skip
        table.add_row("memory check", f"{obs.memory_check}: {obs.memory_check_detail} "
                      f"({obs.memory_check_passes} passes)")  # fmt: skip
        table.add_row("dirty rate", ", ".join(f"{k / 1024:.1f}" for k in obs.dirty_kib_s)
                      + " MiB/s (per second)")  # fmt: skip
        table.add_row("data disk", {True: "checksum matches", False: "CHECKSUM DIFFERS",
                                    None: "no checksum seen"}[obs.disk_checksum_match])  # fmt: skip
        table.add_row("echo probe", obs.echo_error or "from the client namespace: "
                      + ", ".join(f"{r:.1f} ms" for r in obs.echo_rtt_ms))  # fmt: skip
        console.print(Panel(table, title="what vmferry sees of the running guest"))
        console.print(Panel(result_table(moved), title=f"{moved.strategy} migration "
                            f"{moved.source} -> {moved.destination}"))  # fmt: skip
        console.print(inventory_table(list(report.inventory)))
        console.print("the lab stays up: try `vmferry lab status`, `vmferry inventory`; "
                      "`vmferry lab down` removes it")  # fmt: skip
    healthy = (obs.heartbeats > 0 and obs.memory_check == "ok" and obs.echo_error is None
               and obs.disk_checksum_match is True)  # fmt: skip
    if not healthy:
        raise VmferryError("the demo guest is not healthy; see the report above")
    if moved.status is not JobStatus.COMPLETED:
        raise MigrationFailedError(f"the demo migration {moved.status}: {moved.reason}")
