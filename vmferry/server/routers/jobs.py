"""`GET /jobs`, `GET /jobs/{id}`, `POST /jobs/{id}/cancel`, `POST /jobs/{id}/resume`,
`GET /jobs/{id}/events` (SSE).

A job reads as `vmferry job show --json` prints it; its event stream carries the same
events, one Server-Sent Event each (``event``: the event's kind, ``id``: its index,
``data``: ``{"at", "kind", "message", "data"}``), and ends with an ``end`` event carrying
the finished job (without its events) once the job has finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import Job
from vmferry.server.actions import Services, services_of
from vmferry.server.auth import CurrentUser, authorize, names, require
from vmferry.server.context import Context
from vmferry.server.roles import Action
from vmferry.server.schemas import JobOut, Problem
from vmferry.store import accounts

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_json(job: Job) -> dict[str, Any]:
    found: dict[str, Any] = to_jsonable(job)
    return found


def existing_job(job_id: str, context: Context) -> Job:
    """The job ``job_id`` (404 before anything streams when there is none)."""
    return context.store.get_job(job_id)


ExistingJob = Annotated[Job, Depends(existing_job)]


@router.get("", response_model=list[JobOut], dependencies=[Depends(require(Action.JOBS_READ))])
def list_jobs(context: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobOut]:
    """The newest jobs first, without their events (as `vmferry jobs --json`)."""
    return [JobOut(**job_json(j)) for j in context.store.list_jobs(limit)]


@router.get(
    "/{job_id}", response_model=JobOut, responses={404: {"model": Problem}},
    dependencies=[Depends(require(Action.JOBS_READ))],
)  # fmt: skip
def get_job(job: ExistingJob) -> JobOut:
    """One job with its events and result (as `vmferry job show --json`)."""
    return JobOut(**job_json(job))


@router.post(
    "/{job_id}/cancel", response_model=JobOut, status_code=202,
    responses={200: {"model": JobOut, "description": "the job had already finished"},
               403: {"model": Problem}, 404: {"model": Problem}},
    dependencies=[Depends(names(Action.JOBS_CANCEL, "job_id"))],
)  # fmt: skip
def cancel_job(
    job_id: str, request: Request, response: Response, user: CurrentUser,
    context: Context,
) -> JobOut:  # fmt: skip
    """Ask the process driving the job to cancel it (the source VM keeps running): 202
    with the job, or 200 when it had already finished. The job's events say when it ends
    (`GET /jobs/{id}/events`)."""
    job = context.store.get_job(job_id)
    authorize(request, user, Action.JOBS_CANCEL, target=job_id,
              vm_tags=accounts.tags_of(context.store, job.vm))  # fmt: skip
    if job.status.finished:
        response.status_code = 200
        return JobOut(**job_json(job))
    return JobOut(**job_json(context.store.request_cancel(job_id)))


@router.get(
    "/{job_id}/events", response_class=EventSourceResponse,
    responses={404: {"model": Problem}}, dependencies=[Depends(require(Action.JOBS_READ))],
)  # fmt: skip
async def job_events(
    job: ExistingJob,
    context: Context,
    last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """The job's events as Server-Sent Events, from the first (or after Last-Event-ID),
    until the job has finished."""
    after = int(last_event_id) + 1 if last_event_id and last_event_id.isdigit() else 0
    async for item in context.feeds.follow(job, after):
        if isinstance(item, Job):
            ended = {k: v for k, v in job_json(item).items() if k != "events"}
            yield ServerSentEvent(data=ended, event="end")
            return
        index, event = item
        yield ServerSentEvent(data=to_jsonable(event), event=event.kind, id=str(index))


@router.post(
    "/{job_id}/resume", response_model=JobOut,
    responses={403: {"model": Problem}, 404: {"model": Problem}},
    dependencies=[Depends(names(Action.JOBS_RESUME, "job_id"))],
)  # fmt: skip
def resume_job(
    job_id: str, request: Request, user: CurrentUser, context: Context,
    services: Annotated[Services, Depends(services_of)],
) -> JobOut:  # fmt: skip
    """Finish a job whose vmferry died as libvirt shows it ended (as `vmferry job resume`):
    recorded completed, failed or cancelled; an incoming copy left on the destination while
    the source runs the VM is destroyed; a warm or cold move is finished or undone. A job
    that has finished, or whose vmferry still drives it, is returned as it is; one it
    cannot tell yet stays unfinished, its last event says why. Running it again changes
    nothing. It may wait (up to a minute) while libvirt still migrates the VM."""
    job = context.store.get_job(job_id)
    authorize(request, user, Action.JOBS_RESUME, target=job_id,
              vm_tags=accounts.tags_of(context.store, job.vm))  # fmt: skip
    return JobOut(**job_json(services.resume_job(job_id)))
