"""`vmferry demo`."""

from __future__ import annotations

import secrets

import typer
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from vmferry.cli.check_cmd import report_json
from vmferry.cli.hosts_cmd import inventory_table
from vmferry.cli.migrate_cmd import progress_table, result_json, result_table
from vmferry.cli.output import console, err_console, print_json, progress_printer
from vmferry.engine.convergence import PolicyState
from vmferry.errors import AlreadyExistsError, MigrationFailedError, VmferryError
from vmferry.lab.demo import DEMO_GUEST, run_demo
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import JobStatus, ProgressSample
from vmferry.service import users as users_service
from vmferry.store.db import Store, open_store

DEMO_USER = "demo"


def demo_login(store: Store) -> tuple[str, str]:
    """The console's demo user (an operator) with a new random password: (name, password).
    Run again, it gets another password (and its sessions end)."""
    password = secrets.token_urlsafe(12)
    try:
        users_service.add_user(store, DEMO_USER, "operator", password=password)
    except AlreadyExistsError:
        users_service.set_password(store, DEMO_USER, password)
    return DEMO_USER, password


def serve_console(listen: str) -> None:
    """`vmferry server` with its console, after printing where it is and how to log in
    (until Ctrl-C; the lab stays up)."""
    from vmferry.cli.server_cmd import parse_listen, server

    host, port = parse_listen(listen)
    with open_store() as store:
        name, password = demo_login(store)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    table = Table(show_header=False, box=None)
    table.add_row("open", f"{url}/")
    table.add_row("user", name)
    table.add_row("password", password)
    table.add_row("then", f"Inventory -> {DEMO_GUEST} -> Move (live): the job page follows the "
                  "move as it happens")  # fmt: skip
    console.print(Panel(table, title="the web console (Ctrl-C stops it; the lab stays up)"))
    server(listen=listen, log_level="warning", inventory_ttl_s=5.0)


def demo(
    watch_s: float = typer.Option(10.0, "--watch", help="Seconds to watch the guest."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    with_console: bool = typer.Option(
        False,
        "--console",
        help="Then serve the web console (its URL and a login printed) "
        "to move the guest from the browser; until Ctrl-C.",
    ),
    listen: str = typer.Option("127.0.0.1:8470", "--listen", help="Where --console serves."),
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
    if with_console:
        serve_console(listen)
