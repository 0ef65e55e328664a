"""`vmferry plan create|show|run|resume|pause|cancel`: wave plans (docs/planning.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vmferry.cli.output import console, err_console, print_json, progress_printer
from vmferry.cli.sources_cmd import password_for
from vmferry.client.remote import URL_ENV, remote_api
from vmferry.errors import (
    BadInputError,
    MigrationFailedError,
    NoRemoteFormError,
    StoppedFollowingError,
)
from vmferry.model.migration import ProgressSample
from vmferry.model.plan_run import PlanItem, PlanRecord, PlanStatus
from vmferry.plan import Method
from vmferry.service.plan import (
    ItemRehearsal,
    assess_disks,
    cancel_plan,
    create_plan,
    pause_plan,
    plan_json,
    rehearse_plan,
    show_plan,
    write_plan_gantt,
)
from vmferry.service.plan_imports import import_sources
from vmferry.service.plan_run import PlanEvent, run_plan
from vmferry.service.vsphere_sources import get_source

if TYPE_CHECKING:
    from vmferry.client.api import ApiClient

app = typer.Typer(
    help="Plan waves of migrations, run them, compare predicted with actual.", no_args_is_help=True
)

MIB = 2**20
POLL_S = 0.5  # how often a remote run asks for its plan
PLAN_FILE_HELP = (
    "The plan file (YAML, docs/planning.md); in remote mode read here and sent to the server."
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")]
PlanId = Annotated[str, typer.Argument(help="The plan's id (from `vmferry plan create`).")]


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _span(start: float | None, end: float | None) -> str:
    return "-" if start is None else f"{_secs(start)} → {_secs(end)}"


def plan_table(doc: dict[str, Any]) -> Table:
    """One row per VM: wave, move, strategy, predicted and actual times, status (from the
    `plan show --json` document: the store's plan, or the server's answer)."""
    table = Table(
        title=f"plan {doc['id']}" + (f" ({doc['name']})" if doc["name"] else ""),
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
    for i in doc["items"]:
        predicted, actual = i["predicted"], i["actual"] or {}
        downtime = f"{_secs(predicted['downtime_ms'])} / {_secs(actual.get('downtime_ms'))}"
        table.add_row(
            str(i["wave"]),
            i["vm"],
            f"{i['source']} → {i['destination']}",
            i["strategy"] + (" +disks" if i.get("copy_storage") else ""),
            _span(predicted["start_s"], predicted["end_s"]),
            _span(actual.get("start_s"), actual.get("end_s")),
            downtime,
            str(i["status"]),
            i["job_id"] or "-",
        )
    return table


def plan_summary(doc: dict[str, Any]) -> Group:
    """Why each strategy, then the makespan against the lower bound."""
    lines = [
        Text.assemble((f"{i['vm']}: ", "bold"), f"{i['strategy']} — {i['strategy_reason']}")
        for i in doc["items"]
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
    status = f"status {doc['status']}" + (f": {doc['reason']}" if doc["reason"] else "")
    if doc["requested"]:
        status += f" ({doc['requested']} requested)"
    lines.append(Text(status))
    return Group(*lines)


def _print(doc: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(doc)
    else:
        console.print(plan_table(doc))
        console.print(plan_summary(doc))


@app.command("create")
def create(
    path: Annotated[Path, typer.Argument(help=PLAN_FILE_HELP)],
    method: Annotated[str, typer.Option(help="auto, heuristic or cpsat.")] = "auto",
    time_limit: Annotated[float, typer.Option(min=0.1, help="CP-SAT's time limit, s.")] = 10.0,
    json_out: JsonOpt = False,
    rehearse: Annotated[bool, typer.Option("--rehearse", help="Then rehearse each VM's move "
                                           "(`vmferry rehearse`): a copy booted in "
                                           "isolation on its destination; exit 4 when one "
                                           "fails.")] = False,
    rehearse_pool: Annotated[str | None, typer.Option("--rehearse-pool", help="The pool "
                                                      "both hosts see for the rehearsals' "
                                                      "backups (default: the VM's).")] = None,
) -> None:  # fmt: skip
    """Measure the VMs, plan the waves, choose each VM's strategy, and store the plan."""
    if method not in ("auto", "heuristic", "cpsat"):
        raise typer.BadParameter("use auto, heuristic or cpsat", param_hint="--method")
    chosen: Method = (
        "cpsat" if method == "cpsat" else "heuristic" if method == "heuristic" else "auto"
    )
    api = remote_api()
    if api is not None and rehearse:
        api.close()
        raise NoRemoteFormError(f"`vmferry plan create --rehearse` has no remote form yet; "
                                f"unset {URL_ENV} to run it locally")  # fmt: skip
    if api is not None:
        err_console.print("[dim]• measuring the VMs and planning[/dim]")
        text = _plan_text(path)
        with api:
            doc = api.create_plan(text, method=chosen, time_limit_s=time_limit,
                                  shown_as=path.name)  # fmt: skip
        _print(doc, json_out)
        return
    err_console.print("[dim]• measuring the VMs and planning[/dim]")
    record = create_plan(path, method=chosen, time_limit_s=time_limit, assess=assess_disks,
                         password=password_for)  # fmt: skip
    failed = []
    if rehearse:
        for outcome in rehearse_plan(record.id, pool=rehearse_pool, on_item=_say_rehearsal):
            if outcome.status != "completed":
                failed.append(outcome.vm)
        record = show_plan(record.id)
    _print(plan_json(record), json_out)
    if failed:
        err_console.print(f"the rehearsal failed for {', '.join(failed)}: see each line above; "
                          "`vmferry plan show` keeps them", highlight=False)  # fmt: skip
        raise typer.Exit(4)


def _say_rehearsal(outcome: ItemRehearsal) -> None:
    boot = outcome.phases_ms.get("boot")
    if outcome.status == "completed":
        took = f" (boot {boot / 1000:.1f} s)" if boot is not None else ""
        line = f"{outcome.vm}: rehearsal on {outcome.destination} completed{took}"
    else:
        line = f"{outcome.vm}: rehearsal on {outcome.destination} failed: {outcome.reason}"
    err_console.print(f"[dim]•[/dim] {line}", highlight=False)


def _plan_text(path: Path) -> str:
    """The plan file's text, with the errors `load_plan` gives for an unreadable one."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInputError(f"cannot read the plan {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: not UTF-8 text") from e


@app.command("show")
def show(
    plan_id: PlanId,
    json_out: JsonOpt = False,
    gantt: Annotated[
        Path | None, typer.Option(help="Also write the Gantt chart (out.html or out.png).")
    ] = None,
) -> None:
    """The plan: waves, predicted and (once run) actual times per VM, and why."""
    api = remote_api()
    if api is not None:
        with api:
            doc = api.plan(plan_id)
            if gantt is not None:
                _write_remote_gantt(api, plan_id, gantt)
        _print(doc, json_out)
        return
    record = show_plan(plan_id)
    if gantt is not None:
        written = write_plan_gantt(record, gantt)
        err_console.print(f"[dim]• Gantt chart written to {written}[/dim]")
    _print(plan_json(record), json_out)


def _write_remote_gantt(api: ApiClient, plan_id: str, path: Path) -> None:
    """The server's chart (``GET /plans/{id}/gantt``) written here, as `write_plan_gantt`
    writes the local one (the suffix chooses the format)."""
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise BadInputError(f"--gantt {path}: the file should end in .html or .png")
    content = api.plan_gantt(plan_id, "png" if suffix == ".png" else "html")
    try:
        path.write_bytes(content)
    except OSError as e:
        raise BadInputError(f"cannot write {path}: {e.strerror or e}") from e
    err_console.print(f"[dim]• Gantt chart written to {path}[/dim]")


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


def _source_passwords(record: PlanRecord) -> dict[str, str]:
    """The password of each vSphere source the plan still imports from
    (``$VMFERRY_VSPHERE_PASSWORD``, else asked for)."""
    return {name: password_for(get_source(name)) for name in import_sources(record.items)}


def _run(plan_id: str, json_out: bool, *, resume: bool) -> None:
    api = remote_api()
    if api is not None:
        with api:
            doc = run_remote(api, plan_id, resume=resume)
    else:
        record = show_plan(plan_id)
        asked = _source_passwords(record)  # before the live view
        with Live(console=err_console, transient=True, refresh_per_second=4) as live:
            record = run_plan(plan_id, on_event=_RunView(record, live),
                              password=lambda source: asked[source.name])  # fmt: skip
        doc = plan_json(record)
    _print(doc, json_out)
    if doc["status"] == PlanStatus.FAILED:
        raise MigrationFailedError(f"plan {plan_id} failed: {doc['reason']}")


@app.command("run")
def run(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Run the plan wave by wave through the migration engine (Ctrl-C pauses it and leaves
    every source VM running); after a crash, run it again to go on. In remote mode the
    server runs it and this follows it (Ctrl-C asks the server to pause it)."""
    _run(plan_id, json_out, resume=False)


@app.command("resume")
def resume(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Go on with a paused, failed or interrupted plan (completed VMs are skipped)."""
    _run(plan_id, json_out, resume=True)


@app.command("pause")
def pause(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Start no new migration; the running ones finish, then the plan is paused."""
    api = remote_api()
    if api is not None:
        with api:
            doc = api.pause_plan(plan_id)
    else:
        doc = plan_json(pause_plan(plan_id))
    _print_request(doc, json_out, "pause", "the running migrations finish first")


@app.command("cancel")
def cancel(plan_id: PlanId, json_out: JsonOpt = False) -> None:
    """Cancel the running migrations (their sources keep running) and stop the plan."""
    api = remote_api()
    if api is not None:
        with api:
            doc = api.cancel_plan(plan_id)
    else:
        doc = plan_json(cancel_plan(plan_id))
    _print_request(doc, json_out, "cancel", "its runner cancels the running migrations")


def _print_request(doc: dict[str, Any], json_out: bool, request: str, pending: str) -> None:
    """The plan after a pause or cancel request; says so while its runner has yet to act."""
    if json_out:
        print_json(doc)
        return
    waiting = f" ({request} requested; {pending})" if doc["requested"] == request else ""
    console.print(f"plan {doc['id']}: {doc['status']}{waiting}")


# -- remote mode ----------------------------------------------------------------------------

_ITEM_ENDS = ("completed", "failed", "cancelled")


def _changes(doc: dict[str, Any]) -> tuple[object, ...]:
    """What a run of the plan changes: its status and times, and each item's."""
    items = tuple((i["vm"], i["status"], i["attempts"]) for i in doc["items"])
    return doc["status"], doc["reason"], doc["started_at"], doc["finished_at"], items


def run_remote(
    api: ApiClient, plan_id: str, *, resume: bool, poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) the plan in the server (``POST /plans/{id}/run|resume``) and follow
    it (``GET /plans/{id}`` every ``poll_s``) until it no longer runs: the plan then. Each
    item's start and end is a progress line, as the local run prints them.

    With SQLite the server answers once the plan runs; with PostgreSQL once a worker has
    it queued: this waits until a worker runs it (or the plan changed in between). The
    first Ctrl-C asks the server to pause it (``POST /plans/{id}/pause``: the running
    migrations finish, then the plan is paused; `plan resume` goes on) and follows on; a
    second stops following (exit 130) while the server goes on."""
    note = progress_printer()
    start = api.resume_plan if resume else api.run_plan
    doc = start(plan_id)
    note(f"{'resuming' if resume else 'running'} plan {plan_id} in the vmferry server at "
         f"{api.url}")  # fmt: skip
    before = _changes(doc)
    waiting = doc["status"] != PlanStatus.RUNNING
    if waiting:
        note(f"plan {plan_id} is queued for a vmferry worker")
    seen: dict[str, tuple[str, int]] = {}
    paused = False
    while True:
        try:
            for item in doc["items"]:
                _note_item(item, seen, note)
            if doc["status"] == PlanStatus.RUNNING:
                waiting = False
            elif not waiting or _changes(doc) != before:
                break
            sleep(poll_s)
            doc = api.plan(plan_id)
        except KeyboardInterrupt:
            if paused:
                raise StoppedFollowingError(
                    f"stopped following plan {plan_id}: the server pauses it once its "
                    f"running migrations end; `vmferry plan show {plan_id}`"
                ) from None
            paused = True
            note(f"Ctrl-C: asking the server to pause plan {plan_id} (its running migrations "
                 f"finish; `vmferry plan resume {plan_id}` goes on); Ctrl-C again stops "
                 "following")  # fmt: skip
            doc = api.pause_plan(plan_id)
    note(f"plan {plan_id} {doc['status']}" + (f": {doc['reason']}" if doc["reason"] else ""))
    return doc


def _note_item(item: dict[str, Any], seen: dict[str, tuple[str, int]],
               note: Callable[[str], None]) -> None:  # fmt: skip
    """The progress line of an item that started or ended since it was last seen (the
    local run's ``start`` and ``done`` lines)."""
    key = (str(item["status"]), int(item["attempts"]))
    if seen.get(item["vm"]) == key:
        return
    first = item["vm"] not in seen
    seen[item["vm"]] = key
    if key[0] == "running":
        note(f"{item['vm']}: {item['source']} -> {item['destination']} "
             f"({item['strategy']}, wave {item['wave']})")  # fmt: skip
    elif key[0] in _ITEM_ENDS and not (first and key[1] == 0):
        actual = item["actual"] or {}
        took = actual.get("total_time_ms")
        took_text = "" if took is None else f" in {took / 1000:.1f} s"
        why = f": {item['reason']}" if item["reason"] else ""
        note(f"{item['vm']}: {key[0]}{took_text} (predicted {item['predicted']['duration_s']} s)"
             f"{why}")  # fmt: skip
