"""The console's pages and forms. Every page reads through the server's context (the store,
the cached inventory, the moves) and every form acts through what the API's routers call,
after the same role rules (:func:`vmferry.server.auth.authorize`); the audit trail's
middleware records each POST under the session's user, as it does the API's.

A page's decisions (what to show, which choices a role has) are pure functions in
:mod:`vmferry.console.views`; this module reads, calls and renders.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.responses import Response

from vmferry.console import views
from vmferry.console.session import (
    ConsoleSession,
    LoginRequired,
    check_password,
    clear_session_cookie,
    csrf_matches,
    end_session,
    form_of,
    new_login_token,
    open_session,
    safe_next,
    secure_headers,
    session_of,
    set_login_cookie,
    set_session_cookie,
)
from vmferry.drivers.pdf_print import print_pdf
from vmferry.errors import NotFoundError, VmferryError
from vmferry.model import VmRecord, VmState
from vmferry.model.maintenance import HOST_JOB_KINDS
from vmferry.model.migration import Job, MigrationOptions
from vmferry.server.actions import Services, is_inside, services_of
from vmferry.server.auth import authorize
from vmferry.server.context import Context, ServerContext
from vmferry.server.errors import Refused, status_of
from vmferry.server.inventory import find_vm
from vmferry.server.project_rules import check_self_service_move
from vmferry.server.roles import Action, decide
from vmferry.server.routers.imports import start_import
from vmferry.server.routers.plans import _start as start_plan
from vmferry.server.schemas import ImportIn
from vmferry.service import audit as audit_service
from vmferry.service.plan import cancel_plan, pause_plan, plan_json
from vmferry.service.profile import stored_summary
from vmferry.service.settings import import_dirs
from vmferry.store import accounts, project_policies

__all__ = ["ConsoleProblem", "router", "templates"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
router = APIRouter(include_in_schema=False)
templates.env.filters.update(
    size=views.size_text,
    disk_size=lambda spec: views.size_text(views.disk_bytes(spec)) if spec.disks else "",
    nets=lambda spec: ", ".join(views.networks(spec)),
    projects=lambda tags: ", ".join(views.project_of(tags)),
    short_os=views.short_os,
)


class ConsoleProblem(Exception):
    """A request the console answers with its error page: the status, a title and what
    the user can do about it."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def render(request: Request, name: str, session: ConsoleSession | None, status: int = 200,
           **values: Any) -> Response:  # fmt: skip
    """The page ``name`` with the console's headers."""
    context = {"session": session, "csrf": session.csrf_token if session else "",
               "path": request.url.path, **values}  # fmt: skip
    response = templates.TemplateResponse(request, name, context, status_code=status)
    return secure_headers(response)


def _redirect(target: str) -> Response:
    return secure_headers(RedirectResponse(target, status_code=303))


# -- who is asking ---------------------------------------------------------------------------


def signed_in(request: Request, context: Context) -> ConsoleSession:
    """The request's session (else the login page, then back here); the audit trail's
    rows of its POSTs name its user."""
    found = session_of(context.store, request)
    if found is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query if request.method == "GET" else "/")
    request.state.user = found.user.name
    return found


async def signed_in_or_none(request: Request) -> ConsoleSession | None:
    """The request's session if it has one (for the error page's header)."""
    context: ServerContext = request.app.state.vmferry
    return await run_in_threadpool(session_of, context.store, request)


Signed = Annotated[ConsoleSession, Depends(signed_in)]
Svc = Annotated[Services, Depends(services_of)]


async def checked_form(request: Request, session: Signed) -> dict[str, str]:
    """The POSTed form, refused (403) unless it carries the session's CSRF token."""
    form = await form_of(request)
    if not csrf_matches(session.csrf_token, form.get("csrf_token")):
        request.state.action = "console.csrf"
        request.state.rule = "console.csrf"
        named = [v for k, v in request.path_params.items() if k in ("name", "job_id", "plan_id")]
        request.state.target = named[0] if named else request.url.path
        raise ConsoleProblem(403, "Form refused", "This form did not come from this console's "
                             "session (its CSRF token is missing or stale). Reload the page and "
                             "send it again.")  # fmt: skip
    return form


Form = Annotated[dict[str, str], Depends(checked_form)]


def _allowed(session: ConsoleSession, action: Action, tags: tuple[str, ...] | None = None) -> bool:
    return decide(session.user.role, session.user.project, action, tags).allowed


def _authorize(request: Request, session: ConsoleSession, action: Action, target: str | None,
               tags: tuple[str, ...] | None = None) -> None:  # fmt: skip
    """The API's role rule; a refusal is the console's 403 page naming the rule."""
    try:
        authorize(request, session.user, action, target=target, vm_tags=tags)
    except Refused as exc:
        raise ConsoleProblem(403, "Not allowed", f"{exc.reason} (rule {exc.rule}).") from exc


def _problem(exc: VmferryError, title: str) -> ConsoleProblem:
    return ConsoleProblem(status_of(exc), title, exc.message.splitlines()[0])


# -- login -----------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, context: Context, next: str = "/") -> Response:
    if session_of(context.store, request) is not None:
        return _redirect(safe_next(next))
    token = new_login_token()
    response = render(request, "login.html", None, login_token=token, next=safe_next(next),
                      error=None)  # fmt: skip
    set_login_cookie(response, request, token)
    return response


@router.post("/login")
async def login(request: Request, context: Context) -> Response:
    form = await form_of(request)
    cookie = request.cookies.get("vmferry_login", "")
    target = safe_next(form.get("next"))
    if not cookie or not csrf_matches(cookie, form.get("csrf_token")):
        token = new_login_token()
        response = render(request, "login.html", None, 403, login_token=token, next=target,
                          error="The login form expired or did not come from this console. "
                          "Enter your name and password again.")  # fmt: skip
        set_login_cookie(response, request, token)
        return response
    name, password = form.get("username", "").strip(), form.get("password", "")
    user = await run_in_threadpool(check_password, context.store, name, password)
    if user is None:
        token = new_login_token()
        response = render(request, "login.html", None, 401, login_token=token, next=target,
                          error="Wrong user name or password (a user's password is set with "
                          "`vmferry users add NAME --password-stdin`).", username=name)  # fmt: skip
        set_login_cookie(response, request, token)
        return response
    value, _session = await run_in_threadpool(open_session, context.store, request, user)
    request.state.user, request.state.action = user.name, "console.login"
    response = _redirect(target)
    set_session_cookie(response, request, value)
    set_login_cookie(response, request, None)
    return response


@router.post("/logout")
def logout(request: Request, session: Signed, form: Form, context: Context) -> Response:
    request.state.action = "console.logout"
    end_session(context.store, session)
    response = _redirect("/login")
    clear_session_cookie(response, request)
    return response


# -- fleet and inventory ---------------------------------------------------------------------


def _tags(context: ServerContext) -> dict[str, tuple[str, ...]]:
    return accounts.vm_tags(context.store)


def _visible(session: ConsoleSession, records: list[VmRecord],
             tags: dict[str, tuple[str, ...]]) -> list[VmRecord]:  # fmt: skip
    """What the user may see: a self-service user its project's VMs only."""
    return views.project_records(records, tags, session.user.project)


@router.get("/")
def fleet(request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.HOSTS_READ, None)
    hosts = context.store.list_hosts()
    inventory = context.inventory(context.store, None)
    tags = _tags(context)
    records = _visible(session, inventory.records, tags)
    facts = request.app.state.vmferry_console.host_facts(context.store)
    running = [j for j in context.store.list_jobs(200) if not j.status.finished]
    jobs = _visible_jobs(session, context, running)
    rows = views.fleet_rows([(h.name, h.uri) for h in hosts], records, inventory.unreachable,
                            facts, jobs)  # fmt: skip
    return render(request, "fleet.html", session, rows=rows, title="Fleet")


@router.get("/inventory")
def inventory(request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.VMS_READ, None)
    params = dict(request.query_params)
    asked, problems = views.parse_inventory(params, request.query_params.getlist("tag"))
    fleet_now = context.inventory(context.store, None)
    tags = _tags(context)
    records = _visible(session, fleet_now.records, tags)
    page = views.inventory_page(records, tags, asked)
    return render(request, "inventory.html", session, page=page, problems=problems,
                  states=[state.value for state in VmState],
                  unreachable=fleet_now.unreachable, sort_keys=views.SORT_KEYS,
                  page_sizes=views.PAGE_SIZES, title="Inventory")  # fmt: skip


# -- one VM ----------------------------------------------------------------------------------


def _vm(
    session: ConsoleSession, context: ServerContext, name: str
) -> tuple[VmRecord, tuple[str, ...]]:
    """The VM ``name`` as the user may see it (a self-service user: its project's only)."""
    record = find_vm(context.inventory(context.store, None).records, name)
    tags = accounts.tags_of(context.store, record.spec.name) if record else ()
    if record is None or not views.project_records([record], {record.spec.name: tags},
                                                   session.user.project):  # fmt: skip
        raise ConsoleProblem(404, "No such VM", f"No VM named {name!r} on the registered hosts"
                             " that you may see. Search the inventory for it.")  # fmt: skip
    return record, tags


def _move_choices(session: ConsoleSession, context: ServerContext, record: VmRecord,
                  tags: tuple[str, ...]) -> views.MoveChoices:  # fmt: skip
    hosts = [h.name for h in context.store.list_hosts()]
    policy = (project_policies.get_policy(context.store, session.user.project)
              if session.user.project else None)  # fmt: skip
    return views.move_choices(session.user.role, session.user.project, tags, record.host,
                              hosts, policy)  # fmt: skip


def _vm_page(request: Request, session: ConsoleSession, context: ServerContext, name: str,
             status: int = 200, **extra: Any) -> Response:  # fmt: skip
    record, tags = _vm(session, context, name)
    samples = context.store.profile_samples(record.spec.name, limit=2000)
    summary = stored_summary(record.spec.name, store=context.store) if samples else None
    jobs = [j for j in context.store.list_jobs(500) if j.vm == record.spec.name][:10]
    choices = _move_choices(session, context, record, tags)
    values: dict[str, Any] = {
        "record": record, "tags": tags, "summary": summary, "choices": choices, "jobs": jobs,
        "profile_json": json.dumps(views.profile_series(samples)),
        "hosts_other": [h.name for h in context.store.list_hosts() if h.name != record.host],
        "can_check": _allowed(session, Action.CHECK, tags),
        "can_predict": _allowed(session, Action.PREDICT, tags),
        "report": None, "prediction": None, "check_error": None, "move_error": None,
        "chosen": {}, "title": record.spec.name,
    }  # fmt: skip
    values.update(extra)
    return render(request, "vm.html", session, status, **values)


@router.get("/vms/{name}")
def vm_page(name: str, request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.VMS_READ, None)
    return _vm_page(request, session, context, name)


@router.post("/vms/{name}/check")
def vm_check(name: str, request: Request, session: Signed, form: Form, context: Context,
             services: Svc) -> Response:  # fmt: skip
    """Pre-flight findings and the prediction for moving the VM to the chosen host."""
    record, tags = _vm(session, context, name)
    to = form.get("to", "").strip()
    _authorize(request, session, Action.CHECK, record.spec.name, tags)
    extra: dict[str, Any] = {"chosen": {"to": to}}
    if not to:
        return _vm_page(request, session, context, name, 422, **extra,
                        check_error="Choose a destination host to check against.")  # fmt: skip
    try:
        extra["report"] = services.check(record.spec.name, to, copy_storage=False)
        if _allowed(session, Action.PREDICT, tags):
            extra["prediction"] = services.predict(
                record.spec.name, to, max_downtime_ms=300, bandwidth_mib_s=None, store=context.store
            )
    except VmferryError as exc:
        return _vm_page(request, session, context, name, status_of(exc), **extra,
                        check_error=exc.message.splitlines()[0])  # fmt: skip
    return _vm_page(request, session, context, name, **extra)


@router.post("/vms/{name}/move")
def vm_move(name: str, request: Request, session: Signed, form: Form,
            context: Context) -> Response:  # fmt: skip
    """Start the move the Move form asks for (as POST /api/v1/migrations), then its job."""
    request.state.action, request.state.target = Action.MIGRATE.value, name
    record, tags = _vm(session, context, name)
    _authorize(request, session, Action.MIGRATE, record.spec.name, tags)
    choices = _move_choices(session, context, record, tags)
    asked = views.parse_move(form, choices)
    chosen = {"to": form.get("to", ""), "strategy": form.get("strategy", ""),
              "max_downtime_ms": form.get("max_downtime_ms", "")}  # fmt: skip
    if isinstance(asked, str):
        return _vm_page(request, session, context, name, 422, move_error=asked, chosen=chosen)
    try:
        check_self_service_move(context.store, session.user, asked.strategy.value,
                                datetime.now(UTC), request=request)  # fmt: skip
    except Refused as exc:
        raise ConsoleProblem(403, "Not allowed", f"{exc.reason} (rule {exc.rule}).") from exc
    if context.moves is None:
        return _vm_page(request, session, context, name, 422, chosen=chosen,
                        move_error="This server does not start moves.")  # fmt: skip
    options = MigrationOptions(strategy=asked.strategy, max_downtime_ms=asked.max_downtime_ms)
    try:
        job = context.moves.start(record.spec.name, asked.to, options, None)
    except VmferryError as exc:
        return _vm_page(request, session, context, name, status_of(exc), chosen=chosen,
                        move_error=exc.message.splitlines()[0])  # fmt: skip
    return _redirect(f"/jobs/{job.id}")


# -- jobs ------------------------------------------------------------------------------------


def _job_visible(session: ConsoleSession, context: ServerContext, job: Job,
                 tags: dict[str, tuple[str, ...]] | None = None) -> bool:  # fmt: skip
    """Whether the user may see ``job``: a self-service user, its project's VMs' jobs only
    (``tags``: every VM's tags, when the caller has read them already)."""
    if session.user.project is None:
        return True
    vm_tags = tags.get(job.vm, ()) if tags is not None else accounts.tags_of(context.store,
                                                                             job.vm)  # fmt: skip
    return session.user.project in views.project_of(vm_tags)


def _visible_jobs(session: ConsoleSession, context: ServerContext, jobs: list[Job]) -> list[Job]:
    tags = _tags(context) if session.user.project is not None else None
    return [j for j in jobs if _job_visible(session, context, j, tags)]


def _job(session: ConsoleSession, context: ServerContext, job_id: str) -> Job:
    try:
        job = context.store.get_job(job_id)
    except NotFoundError:
        job = None
    if job is None or not _job_visible(session, context, job):
        raise ConsoleProblem(404, "No such job", f"There is no job {job_id!r} that you may "
                             "see. The Jobs page lists them.")  # fmt: skip
    return job


@router.get("/jobs")
def jobs_page(request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.JOBS_READ, None)
    jobs = _visible_jobs(session, context, context.store.list_jobs(200))
    return render(request, "jobs.html", session, jobs=jobs, title="Jobs")


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.JOBS_READ, None)
    job = _job(session, context, job_id)
    tags = accounts.tags_of(context.store, job.vm)
    live = views.job_live(job)
    return render(request, "job.html", session, job=job, live=live,
                  steps=views.pipeline(job), points_json=json.dumps(views.progress_points(job)),
                  leftovers=views.leftovers(job),
                  can_cancel=not job.status.finished and _allowed(session, Action.JOBS_CANCEL,
                                                                  tags),
                  can_resume=not job.status.finished and _allowed(session, Action.JOBS_RESUME,
                                                                  tags),
                  can_retry=job.status.finished and job.status.value != "completed"
                  and job.kind == "migrate" and _allowed(session, Action.MIGRATE, tags),
                  where=_where(context, job) if job.status.value in ("failed", "cancelled")
                  and job.kind not in HOST_JOB_KINDS else [],
                  host_job=job.kind in HOST_JOB_KINDS,
                  verification=job.result.verification if job.result else None,
                  title=f"Job {job.id}")  # fmt: skip


def _where(context: ServerContext, job: Job) -> list[tuple[str, str]]:
    """The hosts that have a VM named as the job's, and its state there (as they answer
    now)."""
    fleet_now = context.inventory(context.store, None)
    return [(r.host, r.state.value) for r in fleet_now.records if r.spec.name == job.vm]


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request, context: Context) -> Response:
    """The job's events as Server-Sent Events for the job page: each event with the page's
    figures after it (pipeline, rate, ETA, projected downtime, the chart's point), then
    ``end`` once the job has finished."""
    session = await run_in_threadpool(signed_in, request, context)
    _authorize(request, session, Action.JOBS_READ, None)
    job = await run_in_threadpool(_job, session, context, job_id)
    last = request.headers.get("last-event-id", "")
    shown = request.query_params.get("from", "")  # the events the page already shows
    start = int(last) + 1 if last.isdigit() else int(shown) if shown.isdigit() else 0

    async def stream() -> AsyncIterator[str]:
        """The API's shared feed of the job (server/job_feed.py: one poll of the store per
        job whoever follows it), each event sent with the page's figures after it."""
        known = list(job.events)
        # each event is sent with the job as it was once that event was recorded: a page
        # that connects after the job ended is sent the events it lacks, and must not see
        # "completed" beside an earlier sample (its chart would stop short of the last)
        status = views.status_at(known, start)
        if views.status_at(known, len(known)) != job.status:  # events that do not tell it
            status = job.status
        async for item in context.feeds.follow(job, start):
            if isinstance(item, Job):
                yield _sse("end", {"status": item.status.value})
                return
            index, event = item
            if index == len(known):
                known.append(event)
            status = views.status_after(status, event)
            now = replace(job, status=status, events=tuple(known[: index + 1]))
            yield _sse("job", views.job_update(now, index), index)

    response = StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})  # fmt: skip
    return secure_headers(response)


def _job_action(request: Request, session: ConsoleSession, context: ServerContext,
                job_id: str, action: Action, act: Callable[[Job], object]) -> Response:  # fmt: skip
    request.state.action, request.state.target = action.value, job_id
    job = _job(session, context, job_id)
    _authorize(request, session, action, job_id, accounts.tags_of(context.store, job.vm))
    try:
        act(job)
    except VmferryError as exc:
        raise _problem(exc, f"Could not {action.value.split('.')[-1]} job {job_id}") from exc
    return _redirect(f"/jobs/{job_id}")


@router.post("/jobs/{job_id}/cancel")
def job_cancel(job_id: str, request: Request, session: Signed, form: Form,
               context: Context) -> Response:  # fmt: skip
    def cancel(job: Job) -> object:
        return None if job.status.finished else context.store.request_cancel(job.id)

    return _job_action(request, session, context, job_id, Action.JOBS_CANCEL, cancel)


@router.post("/jobs/{job_id}/resume")
def job_resume(job_id: str, request: Request, session: Signed, form: Form, context: Context,
               services: Svc) -> Response:  # fmt: skip
    return _job_action(request, session, context, job_id, Action.JOBS_RESUME,
                       lambda job: services.resume_job(job.id))  # fmt: skip


@router.post("/jobs/{job_id}/retry")
def job_retry(job_id: str, request: Request, session: Signed, form: Form,
              context: Context) -> Response:  # fmt: skip
    """Start the same move again (the same VM, destination and options) as a new job."""
    request.state.action, request.state.target = Action.MIGRATE.value, job_id
    job = _job(session, context, job_id)
    _authorize(request, session, Action.MIGRATE, job.vm, accounts.tags_of(context.store, job.vm))
    if not job.status.finished or job.kind != "migrate":
        raise ConsoleProblem(409, "Cannot retry", f"Job {job_id} is {job.status.value}: only "
                             "a finished move can be started again.")  # fmt: skip
    try:
        check_self_service_move(context.store, session.user, job.options.strategy.value,
                                datetime.now(UTC), request=request)  # fmt: skip
    except Refused as exc:
        raise ConsoleProblem(403, "Not allowed", f"{exc.reason} (rule {exc.rule}).") from exc
    if context.moves is None:
        raise ConsoleProblem(422, "Cannot retry", "This server does not start moves.")
    try:
        again = context.moves.start(job.vm, job.destination, job.options, None)
    except VmferryError as exc:
        raise _problem(exc, f"Could not start {job.vm} again") from exc
    return _redirect(f"/jobs/{again.id}")


# -- audit -----------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, session: Signed, context: Context) -> Response:
    """The audit trail, searched by user, VM (or any target), action, result and time."""
    _authorize(request, session, Action.AUDIT_READ, None)
    q = request.query_params
    asked = {k: q.get(k, "").strip()[:255] for k in ("user", "vm", "action", "result", "since",
                                                     "until")}  # fmt: skip
    problem = None
    until = None
    try:
        if asked["until"]:
            until = audit_service.parse_since(asked["until"], datetime.now(UTC))
        found = audit_service.entries(context.store, since=asked["since"] or None,
                                      user=asked["user"] or None, limit=5000)  # fmt: skip
    except VmferryError as exc:
        problem, found = exc.message.replace("--since", "the time").splitlines()[0], []
    entries = views.filter_audit(found, action=asked["action"], target=asked["vm"],
                                 result=asked["result"], until=until)[:500]  # fmt: skip
    return render(request, "audit.html", session, entries=entries, asked=asked,
                  problem=problem, title="Audit")  # fmt: skip


# -- plans -----------------------------------------------------------------------------------


@router.get("/plans")
def plans_page(request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.PLANS_READ, None)
    plans = [plan_json(p) for p in context.store.list_plans(100)]
    return render(request, "plans.html", session, plans=plans, title="Plans")


def _plan_page(request: Request, session: ConsoleSession, context: ServerContext, plan_id: str,
               status: int = 200, action_error: str | None = None) -> Response:  # fmt: skip
    try:
        record = context.store.get_plan(plan_id)
    except NotFoundError as exc:
        raise ConsoleProblem(404, "No such plan", f"There is no plan {plan_id!r}. The Plans "
                             "page lists them.") from exc  # fmt: skip
    doc = plan_json(record)
    bars, span = views.gantt_bars(doc["items"])
    can_run = _allowed(session, Action.PLANS_RUN)
    return render(request, "plan.html", session, status, plan=doc, bars=bars, span=span,
                  can_run=can_run, finished=record.status.finished,
                  action_error=action_error, title=f"Plan {record.name or record.id}")  # fmt: skip


@router.get("/plans/{plan_id}")
def plan_page(plan_id: str, request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.PLANS_READ, None)
    return _plan_page(request, session, context, plan_id)


@router.post("/plans/{plan_id}/{verb}")
def plan_action(plan_id: str, verb: str, request: Request, session: Signed, form: Form,
                context: Context, services: Svc) -> Response:  # fmt: skip
    """Run, resume, pause or cancel the plan, as POST /api/v1/plans/{id}/{verb} does."""
    if verb not in ("run", "resume", "pause", "cancel"):
        raise ConsoleProblem(404, "No such action", f"A plan cannot be asked to {verb!r}.")
    request.state.action = "plans.run" if verb == "run" else f"plans.{verb}"
    request.state.target = plan_id
    _authorize(request, session, Action.PLANS_RUN, plan_id)
    request.state.action = "plans.run" if verb == "run" else f"plans.{verb}"
    try:
        if verb in ("run", "resume"):
            start_plan(plan_id, Response(), context, services)
        elif verb == "pause":
            pause_plan(plan_id, store=context.store)
        else:
            cancel_plan(plan_id, store=context.store)
    except VmferryError as exc:
        return _plan_page(request, session, context, plan_id, status_of(exc),
                          action_error=exc.message.splitlines()[0])  # fmt: skip
    return _redirect(f"/plans/{plan_id}")


# -- reports ---------------------------------------------------------------------------------

CSS_FILE = Path(__file__).parent / "static" / "console.css"


@router.get("/reports")
def reports_page(request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.JOBS_READ, None)
    finished = [j for j in context.store.list_jobs(100) if j.status.finished]
    jobs = _visible_jobs(session, context, finished)
    plans = [plan_json(p) for p in context.store.list_plans(50)]
    return render(request, "reports.html", session, jobs=jobs, plans=plans, title="Reports")


def _report(request: Request, session: ConsoleSession, name: str, filename: str, pdf: bool,
            **values: Any) -> Response:  # fmt: skip
    """The report page, or (``pdf``) the same page printed to PDF by Chromium headless."""
    if not pdf:
        return render(request, name, session, printing=False, **values)
    page = templates.get_template(name).render(
        session=session, csrf="", path=request.url.path, printing=True,
        css=CSS_FILE.read_text(encoding="utf-8"), **values,
    )  # fmt: skip
    try:
        document = print_pdf(page)
    except VmferryError as exc:
        raise _problem(exc, "Could not make the PDF") from exc
    response = Response(document, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip
    return secure_headers(response)


def _job_report(request: Request, session: ConsoleSession, context: ServerContext,
                job_id: str, pdf: bool) -> Response:  # fmt: skip
    _authorize(request, session, Action.JOBS_READ, None)
    job = _job(session, context, job_id)
    prediction = context.store.get_prediction(job.id)
    return _report(request, session, "report_job.html", f"vmferry-migration-{job.id}.pdf", pdf,
                   job=job, prediction=prediction, steps=views.pipeline(job),
                   points=views.progress_points(job), live=views.job_live(job),
                   generated=datetime.now(UTC).isoformat(timespec="seconds"),
                   title=f"Migration report {job.id}")  # fmt: skip


@router.get("/reports/jobs/{job_id}.pdf")
def job_report_pdf(job_id: str, request: Request, session: Signed, context: Context) -> Response:
    return _job_report(request, session, context, job_id, True)


@router.get("/reports/jobs/{job_id}")
def job_report(job_id: str, request: Request, session: Signed, context: Context) -> Response:
    return _job_report(request, session, context, job_id, False)


def _plan_report(request: Request, session: ConsoleSession, context: ServerContext,
                 plan_id: str, pdf: bool) -> Response:  # fmt: skip
    _authorize(request, session, Action.PLANS_READ, None)
    try:
        record = context.store.get_plan(plan_id)
    except NotFoundError as exc:
        raise ConsoleProblem(404, "No such plan", f"There is no plan {plan_id!r}. The Reports "
                             "page lists them.") from exc  # fmt: skip
    doc = plan_json(record)
    bars, span = views.gantt_bars(doc["items"])
    return _report(request, session, "report_plan.html", f"vmferry-plan-{record.id}.pdf", pdf,
                   plan=doc, bars=bars, span=span, summary=views.plan_summary(doc["items"]),
                   generated=datetime.now(UTC).isoformat(timespec="seconds"),
                   title=f"Plan report {record.name or record.id}")  # fmt: skip


@router.get("/reports/plans/{plan_id}.pdf")
def plan_report_pdf(plan_id: str, request: Request, session: Signed,
                    context: Context) -> Response:  # fmt: skip
    return _plan_report(request, session, context, plan_id, True)


@router.get("/reports/plans/{plan_id}")
def plan_report(plan_id: str, request: Request, session: Signed, context: Context) -> Response:
    return _plan_report(request, session, context, plan_id, False)


# -- import ----------------------------------------------------------------------------------

MAX_LISTED_SOURCES = 500


def _sources(roots: tuple[Path, ...]) -> list[str]:
    """The files under the import directories an import can read (by their suffix), at
    most three directories deep, symlinks leading out left out."""
    found: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            depth = len(path.relative_to(root).parts)
            if depth > 4 or not path.is_file() or not views.importable(path.name):
                continue
            if is_inside(path, roots):
                found.append(str(path))
            if len(found) >= MAX_LISTED_SOURCES:
                return found
    return found


def _import_page(request: Request, session: ConsoleSession, context: ServerContext,
                 status: int = 200, **values: Any) -> Response:  # fmt: skip
    roots = import_dirs(context.store)
    defaults: dict[str, Any] = {"asked": {}, "outcome": None, "error": None}
    return render(request, "import.html", session, status, roots=roots,
                  sources=_sources(roots), hosts=[h.name for h in context.store.list_hosts()],
                  title="Import", **{**defaults, **values})  # fmt: skip


@router.get("/import")
def import_page(request: Request, session: Signed, context: Context) -> Response:
    _authorize(request, session, Action.IMPORT, None)
    return _import_page(request, session, context)


@router.post("/import")
def import_run(request: Request, session: Signed, form: Form, context: Context,
               services: Svc) -> Response:  # fmt: skip
    """Check (a dry run: findings and the domain XML) or run an import, as POST
    /api/v1/imports does (its path rule, its request, its service)."""
    request.state.action = Action.IMPORT.value
    _authorize(request, session, Action.IMPORT, form.get("source"))
    asked = {k: form.get(k, "").strip() for k in ("source", "to", "name", "network_map",
                                                  "storage_pool", "start", "what")}  # fmt: skip
    body, problem = views.import_body(asked)
    if body is None:
        return _import_page(request, session, context, 422, asked=asked, error=problem)
    try:
        answer = start_import(ImportIn(**body), request, Response(), session.user, context,
                              services)  # fmt: skip
    except Refused as exc:
        return _import_page(request, session, context, 403, asked=asked,
                            error=f"{exc.reason} (rule {exc.rule}).")  # fmt: skip
    except (RequestValidationError, ValidationError) as exc:
        return _import_page(request, session, context, 422, asked=asked,
                            error=views.validation_text(exc.errors()))  # fmt: skip
    except VmferryError as exc:
        return _import_page(request, session, context, status_of(exc), asked=asked,
                            error=exc.message.splitlines()[0])  # fmt: skip
    if isinstance(answer, JSONResponse):  # the dry run's document
        return _import_page(request, session, context, asked=asked,
                            outcome=json.loads(bytes(answer.body)))  # fmt: skip
    return _redirect(f"/jobs/{answer.id}")
