"""`vmferry demo`."""

from __future__ import annotations

import typer
from rich.panel import Panel
from rich.table import Table

from vmferry.cli.hosts_cmd import inventory_table
from vmferry.cli.output import console, print_json, progress_printer
from vmferry.errors import VmferryError
from vmferry.service.demo import run_demo


def demo(
    watch_s: float = typer.Option(10.0, "--watch", help="Seconds to watch the guest."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Start the lab and a guest with a memory workload, and show what vmferry sees."""
    report = run_demo(progress_printer(), watch_s=watch_s)
    obs = report.observation
    if json_out:
        print_json(report)
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
        console.print(inventory_table(list(report.inventory)))
        console.print("the lab stays up: try `vmferry lab status`, `vmferry inventory`; "
                      "`vmferry lab down` removes it")  # fmt: skip
    healthy = (obs.heartbeats > 0 and obs.memory_check == "ok" and obs.echo_error is None
               and obs.disk_checksum_match is True)  # fmt: skip
    if not healthy:
        raise VmferryError("the demo guest is not healthy; see the report above")
