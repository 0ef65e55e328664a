"""Wave plans, as `vmferry plan create|show|run|resume|pause|cancel` (docs/planning.md).

- ``POST /plans``: the plan file's YAML, as ``application/yaml`` (``?method=``,
  ``?time_limit_s=``) or as JSON ``{"yaml", "method", "time_limit_s"}``: the VMs are
  measured, the waves planned and the plan stored (``201``, `plan show --json`'s document).
  A bad plan file is a ``422`` with one problem per line of the command's message
  (``plan.yaml:LINE: FIELD: problem``), at ``body`` (YAML) or ``body.yaml`` (JSON).
- ``GET /plans``, ``GET /plans/{id}``, ``GET /plans/{id}/gantt`` (HTML, PNG or JSON).
- ``POST /plans/{id}/run`` and ``/resume`` (the same, as in the CLI): the plan runs in a
  background thread of this server (its migrations in threads of their own, as
  `vmferry plan run` runs them); ``202`` once the plan is ``running``, ``Location`` the plan.
  With PostgreSQL the run is queued for a `vmferry worker` instead (``202`` at once, the plan
  as it was until a worker takes it; ``409`` while a run of it waits in the queue).
- ``POST /plans/{id}/pause``, ``/cancel``: ``202`` while the runner has yet to act on the
  request, ``200`` when it was done at once (no one ran the plan).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from vmferry.errors import AlreadyExistsError, BadInputError, HostUnreachableError, NotFoundError
from vmferry.model.plan_run import PlanRecord
from vmferry.plan import Method
from vmferry.server.actions import Services, services_of, start_in_thread
from vmferry.server.auth import require
from vmferry.server.context import Context
from vmferry.server.moves import QueuedMoves
from vmferry.server.roles import Action
from vmferry.server.schemas import (
    GanttBarOut,
    GanttOut,
    PlanIn,
    PlanOut,
    PlanSummaryOut,
    Problem,
    ValidationProblem,
)
from vmferry.service.plan import (
    cancel_plan,
    create_plan,
    pause_plan,
    plan_json,
    write_plan_gantt,
)
from vmferry.service.plan_run import PlanEvent, run_plan

router = APIRouter(prefix="/plans", tags=["plans"])
Svc = Annotated[Services, Depends(services_of)]

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such plan"}
}
_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": PlanIn.model_json_schema()},
        "application/yaml": {"schema": {"type": "string", "description": "the plan file"}},
    },
}


def _plan_out(record: PlanRecord) -> PlanOut:
    return PlanOut(**plan_json(record))


def _problems(exc: BadInputError, loc: tuple[str, ...]) -> RequestValidationError:
    """A plan file's problems (one per line of the message) as a 422 at ``loc``."""
    lines = [line for line in exc.message.splitlines() if line.strip()]
    return RequestValidationError([{"loc": loc, "msg": line, "type": "plan_invalid"}
                                   for line in lines])  # fmt: skip


def _read_body(raw: bytes, media_type: str, method: str, time_limit_s: float) -> PlanIn:
    if media_type in YAML_TYPES:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestValidationError([{"loc": ("body",), "msg": "the plan is not UTF-8 text",
                                           "type": "body_unreadable"}]) from None  # fmt: skip
        try:
            return PlanIn.model_validate({"yaml": text, "method": method,
                                          "time_limit_s": time_limit_s})  # fmt: skip
        except ValidationError as exc:  # an empty or oversized text
            raise RequestValidationError([{**e, "loc": ("body",)} for e in
                                          exc.errors(include_url=False)]) from None  # fmt: skip
    try:
        return PlanIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in
                                      exc.errors(include_url=False)]) from None  # fmt: skip


@router.post(
    "", response_model=PlanOut, status_code=201,
    responses={413: {"model": Problem}, 415: {"model": Problem, "description": "neither JSON "
               "nor YAML"}, 422: {"model": ValidationProblem}},
    openapi_extra={"requestBody": _BODY},
    dependencies=[Depends(require(Action.PLANS_WRITE))],
)  # fmt: skip
async def create(
    request: Request, response: Response, context: Context, services: Svc,
    method: Annotated[Literal["auto", "heuristic", "cpsat"],
                      Query(description="with application/yaml")] = "auto",
    time_limit_s: Annotated[float, Query(ge=0.1, le=600,
                                         description="with application/yaml")] = 10.0,
) -> PlanOut:  # fmt: skip
    """Measure the VMs, plan the waves, choose each VM's strategy and store the plan (as
    `vmferry plan create FILE`)."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0]
    media_type = media_type.strip().lower()
    if media_type not in YAML_TYPES and media_type != "application/json":
        raise HTTPException(415, "send the plan as application/yaml, or as application/json "
                            '{"yaml": ...}')  # fmt: skip
    body = _read_body(await request.body(), media_type, method, time_limit_s)
    at = ("body",) if media_type in YAML_TYPES else ("body", "yaml")
    chosen: Method = body.method
    with tempfile.TemporaryDirectory(prefix="vmferry-plan-") as folder:
        path = Path(folder) / "plan.yaml"  # the name the problems' lines give
        path.write_text(body.yaml, encoding="utf-8")
        try:
            record = await run_in_threadpool(
                create_plan, path, store=context.store, measure=services.plan_measure,
                method=chosen, time_limit_s=body.time_limit_s, assess=services.plan_assess,
            )  # fmt: skip
        except (NotFoundError, AlreadyExistsError, HostUnreachableError):
            raise
        except BadInputError as exc:
            raise _problems(exc, at) from None
    request.state.target = record.id
    response.headers["Location"] = f"/api/v1/plans/{record.id}"
    return _plan_out(record)


@router.get("", response_model=list[PlanSummaryOut],
            dependencies=[Depends(require(Action.PLANS_READ))])  # fmt: skip
def list_plans(
    context: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[PlanSummaryOut]:
    """The newest plans first: each as in `plan show --json`, without items and schedule."""
    out = []
    for record in context.store.list_plans(limit):  # without their items: the schedule's
        doc = plan_json(record)
        fields = {k: doc[k] for k in PlanSummaryOut.model_fields if k != "vms"}
        out.append(PlanSummaryOut(**fields, vms=len(record.schedule.get("migrations", []))))
    return out


@router.get("/{plan_id}", response_model=PlanOut, responses=NOT_FOUND,
            dependencies=[Depends(require(Action.PLANS_READ))])  # fmt: skip
def show(plan_id: str, context: Context) -> PlanOut:
    """The plan: waves, predicted and (once run) actual times per VM, and why (as
    `vmferry plan show --json`)."""
    return _plan_out(context.store.get_plan(plan_id))


@router.get(
    "/{plan_id}/gantt", response_model=GanttOut,
    responses={**NOT_FOUND, 200: {"content": {"text/html": {}, "image/png": {}}}},
    dependencies=[Depends(require(Action.PLANS_READ))],
)  # fmt: skip
def gantt(
    plan_id: str, context: Context,
    format: Annotated[Literal["html", "png", "json"], Query()] = "html",
) -> Any:  # fmt: skip
    """The Gantt chart of `vmferry plan show --gantt`: predicted bars, and actual bars
    where the VMs have moved; as HTML (inline SVG), PNG, or the bars as JSON."""
    record = context.store.get_plan(plan_id)
    if format == "json":
        doc = plan_json(record)
        bars = [GanttBarOut(**{"vm": i["vm"], "wave": i["wave"], "source": i["source"],
                 "destination": i["destination"], "strategy": i["strategy"],
                 "status": i["status"], "predicted_start_s": i["predicted"]["start_s"],
                 "predicted_end_s": i["predicted"]["end_s"],
                 "actual_start_s": (i["actual"] or {}).get("start_s"),
                 "actual_end_s": (i["actual"] or {}).get("end_s")})
                for i in doc["items"]]  # fmt: skip
        return GanttOut(plan=record.id, makespan_s=doc["makespan_s"],
                        actual_makespan_s=doc["actual_makespan_s"], bars=bars)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vmferry-gantt-") as folder:
        written = write_plan_gantt(record, Path(folder) / f"gantt.{format}")
        content = written.read_bytes()
    return Response(content, media_type="text/html; charset=utf-8" if format == "html"
                    else "image/png")  # fmt: skip


def _start(plan_id: str, response: Response, context: Context, services: Services) -> PlanOut:
    record = context.store.get_plan(plan_id)  # 404 before anything starts
    if isinstance(context.moves, QueuedMoves):  # PostgreSQL: a worker runs it
        if record.status.finished:
            raise BadInputError(f"plan {plan_id} is {record.status}; there is nothing to run")
        context.moves.queue_plan(plan_id)
        response.headers["Location"] = f"/api/v1/plans/{plan_id}"
        return _plan_out(context.store.get_plan(plan_id))
    running = services.running
    running.claim("plan", plan_id, f"plan {plan_id} is being started or run by this server "
                  "already")  # fmt: skip

    def work(started: Any) -> None:
        def on_event(event: PlanEvent) -> None:
            if event.kind == "plan":  # the first: the plan is running, owned by this server
                started(True)

        try:
            run_plan(plan_id, on_event=on_event, store=context.store,
                     migrate_fn=services.plan_migrate)  # fmt: skip
        finally:
            running.release("plan", plan_id)

    start_in_thread(f"vmferry-plan-{plan_id}", work, services.start_wait_s,
                    f"plan {plan_id}")  # fmt: skip
    response.headers["Location"] = f"/api/v1/plans/{plan_id}"
    return _plan_out(context.store.get_plan(plan_id))


_STARTS: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND, 409: {"model": Problem, "description": "this server runs it already"},
    422: {"model": ValidationProblem, "description": "finished, or run by another vmferry"},
    504: {"model": Problem},
}  # fmt: skip


@router.post("/{plan_id}/run", response_model=PlanOut, status_code=202, responses=_STARTS,
             dependencies=[Depends(require(Action.PLANS_RUN, "plan_id"))])  # fmt: skip
def run(plan_id: str, response: Response, context: Context, services: Svc) -> PlanOut:
    """Run the plan wave by wave in this server (as `vmferry plan run`); 202 once it runs.
    Its items, with their jobs, are at ``GET /plans/{id}``."""
    return _start(plan_id, response, context, services)


@router.post("/{plan_id}/resume", response_model=PlanOut, status_code=202, responses=_STARTS,
             dependencies=[Depends(require(Action.PLANS_RUN, "plan_id",
                                           "plans.resume"))])  # fmt: skip
def resume(plan_id: str, response: Response, context: Context, services: Svc) -> PlanOut:
    """Go on with a paused, failed or interrupted plan (completed VMs are skipped; the jobs
    an earlier run left are reconciled first), as `vmferry plan resume`."""
    return _start(plan_id, response, context, services)


_STOPS: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND, 200: {"model": PlanOut, "description": "done at once: no one ran the plan"},
    422: {"model": ValidationProblem, "description": "the plan has finished"},
}  # fmt: skip


@router.post("/{plan_id}/pause", response_model=PlanOut, status_code=202, responses=_STOPS,
             dependencies=[Depends(require(Action.PLANS_RUN, "plan_id",
                                           "plans.pause"))])  # fmt: skip
def pause(plan_id: str, response: Response, context: Context) -> PlanOut:
    """Start no new migration; the running ones finish, then the plan is paused (202 while
    its runner has yet to do that)."""
    record = pause_plan(plan_id, store=context.store)
    if record.requested != "pause":
        response.status_code = 200
    return _plan_out(record)


@router.post("/{plan_id}/cancel", response_model=PlanOut, status_code=202, responses=_STOPS,
             dependencies=[Depends(require(Action.PLANS_RUN, "plan_id",
                                           "plans.cancel"))])  # fmt: skip
def cancel(plan_id: str, response: Response, context: Context) -> PlanOut:
    """Cancel the running migrations (their sources keep running) and stop the plan (202
    while its runner has yet to do that)."""
    record = cancel_plan(plan_id, store=context.store)
    if record.requested != "cancel":
        response.status_code = 200
    return _plan_out(record)
