"""`vmferry plan create|show|run|resume|pause|cancel`: wave plans (docs/planning.md)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vmferry.cli.output import console, err_console, print_json
from vmferry.errors import MigrationFailedError
from vmferry.model.migration import ProgressSample
from vmferry.model.plan_run import PlanItem, PlanRecord, PlanStatus
from vmferry.plan import Method
from vmferry.service.plan import (
    cancel_plan,
    create_plan,
    pause_plan,
    plan_json,
    show_plan,
    write_plan_gantt,
)
from vmferry.service.plan_run import PlanEvent, run_plan

app = typer.Typer(
    help="Plan waves of migrations, run them, compare predicted with actual.", no_args_is_help=True
)

MIB = 2**20
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")]
PlanId = Annotated[str, typer.Argument(help="The plan's id (from `vmferry plan create`).")]


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _span(start: float | None, end: float | None) -> str:
    return "-" if start is None else f"{_secs(start)} → {_secs(end)}"


def plan_table(record: PlanRecord) -> Table:
    """One row per VM: wave, move, strategy, predicted and actual times, status."""
    table = Table(
        title=f"plan {record.id}" + (f" ({record.name})" if record.name else ""),
        title_justify="left",
    )
    for column in (
        "wave",
        "vm",
        "move",
        "strategy",
        "predicted s",
        "actual s",
        "downtime ms",
        "status",
        "job",
    ):
        table.add_column(column)
    for i in record.items:
        downtime = f"{_secs(i.predicted_downtime_ms)} / {_secs(i.actual_downtime_ms)}"
        table.add_row(
            str(i.wave),
            i.vm,
            f"{i.source} → {i.destination}",
            i.strategy,
            _span(i.predicted_start_s, i.predicted_end_s),
            _span(i.actual_start_s, i.actual_end_s),
            downtime,
            str(i.status),
            i.job_id or "-",
        )
    return table


def plan_summary(record: PlanRecord) -> Group:
    """Why each strategy, then the makespan against the lower bound."""
    doc = plan_json(record)
    lines = [
        Text.assemble((f"{i.vm}: ", "bold"), f"{i.strategy} — {i.strategy_reason}")
        for i in record.items
    ]
    parts: dict[str, int] = doc["lower_bound_parts"] or {}
    bound_by = max(parts, key=lambda k: parts[k]) if parts else "-"
    lines.append(
        Text(
            f"makespan {doc['makespan_s']} s, lower bound {doc['lower_bound_s']} s "
            f"({bound_by}), solver {doc['method']}"
        )
    )
    if doc["actual_makespan_s"] is not None:
        took = doc["actual_makespan_s"]
        lines.append(
            Text(f"actual makespan (wall clock, with checks and verification): {took:.1f} s")
        )
    status = f"status {record.status}" + (f": {record.reason}" if record.reason else "")
    if record.requested:
        status += f" ({record.requested} requested)"
    lines.append(Text(status))
    return Group(*lines)


def _print(record: PlanRecord, json_out: bool) -> None:
    if json_out:
        print_json(plan_json(record))
    else:
        console.print(plan_table(record))
        console.print(plan_summary(record))


@app.command("create")
def create(
    path: Annotated[Path, typer.Argument(help="The plan file (YAML, docs/planning.md).")],
    method: Annotated[str, typer.Option(help="auto, heuristic or cpsat.")] = "auto",
    time_limit: Annotated[float, typer.Option(min=0.1, help="CP-SAT's time limit, s.")] = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Measure the VMs, plan the waves, choose each VM's strategy, and store the plan."""
    if method not in ("auto", "heuristic", "cpsat"):
        raise typer.BadParameter("use auto, heuristic or cpsat", param_hint="--method")
    chosen: Method = (
        "cpsat" if method == "cpsat" else "heuristic" if method == "heuristic" else "auto"
    )
    err_console.print("[dim]• measuring the VMs and planning[/dim]")
    _print(create_plan(path, method=chosen, time_limit_s=time_limit), json_out)


@app.command("show")
def show(
    plan_id: PlanId,
    json_out: JsonOpt = False,
    gantt: Annotated[
        Path | None, typer.Option(help="Also write the Gantt chart (out.html or out.png).")
    ] = None,
) -> None:
    """The plan: waves, predicted and (once run) actual times per VM, and why."""
    record = show_plan(plan_id)
    if gantt is not None:
        written = write_plan_gantt(record, gantt)
        err_console.print(f"[dim]• Gantt chart written to {written}[/dim]")
    _print(record, json_out)


class _RunView:
    """The live view of a running plan (updated from the worker threads)."""

    def __init__(self, record: PlanRecord, live: Live) -> None:
        self.items: dict[str, PlanItem] = {i.vm: i for i in record.items}
        self.samples: dict[str, ProgressSample] = {}
        self.live = live
        self.lock = threading.Lock()

    def __call__(self, event: PlanEvent) -> None:
        with self.lock:
            if event.item is not None:
                self.items[event.vm or event.item.vm] = event.item
            if event.sample is not None and event.vm is not None:
                self.samples[event.vm] = event.sample
            if event.kind in ("plan", "start", "done"):
                self.live.console.print(f"[dim]•[/dim] {event.message}", highlight=False)
            self.live.update(self.table())

    def table(self) -> Table:
        table = Table(box=None)
        for column in ("wave", "vm", "strategy", "status", "progress", "predicted s"):
            table.add_column(column)
        for i in sorted(self.items.values(), key=lambda x: x.order):
            s = self.samples.get(i.vm)
            progress = "-"
            if s is not None and str(i.status) == "running":
                progress = (
                    f"{s.elapsed_ms / 1000:.0f} s, pass {s.iteration}, "
                    f"{s.memory_remaining_bytes / MIB:.0f} MiB left"
                )
            elif i.actual_total_ms is not None:
                progress = f"took {i.actual_total_ms / 1000:.1f} s"
            table.add_row(
                str(i.wave), i.vm, i.strategy, str(i.status), progress, str(i.predicted_s)
            )
        return table


def _run(plan_id: str, json_out: bool) -> None:
    record = show_plan(plan_id)
    with Live(console=err_console, transient=True, refresh_per_second=4) as live:
        record = run_plan(plan_id, on_event=_RunView(record, live))
    _print(record, json_out)
    if record.status is PlanStatus.FAILED:
        raise MigrationFailedError(f"plan {plan_id} failed: {record.reason}")


@app.command("run")
def run(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Run the plan wave by wave through the migration engine (Ctrl-C pauses it and leaves
    every source VM running); after a crash, run it again to go on."""
    _run(plan_id, json_out)


@app.command("resume")
def resume(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Go on with a paused, failed or interrupted plan (completed VMs are skipped)."""
    _run(plan_id, json_out)


@app.command("pause")
def pause(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Start no new migration; the running ones finish, then the plan is paused."""
    _print_request(pause_plan(plan_id), json_out, "pause",
                   "the running migrations finish first")  # fmt: skip


@app.command("cancel")
def cancel(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Cancel the running migrations (their sources keep running) and stop the plan."""
    _print_request(cancel_plan(plan_id), json_out, "cancel",
                   "its runner cancels the running migrations")  # fmt: skip


def _print_request(record: PlanRecord, json_out: bool, request: str, pending: str) -> None:
    """The plan after a pause or cancel request; says so while its runner has yet to act."""
    if json_out:
        print_json(plan_json(record))
        return
    waiting = f" ({request} requested; {pending})" if record.requested == request else ""
    console.print(f"plan {record.id}: {record.status}{waiting}")
