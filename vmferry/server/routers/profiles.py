"""`POST /profiles` (start sampling a VM's workload, as `vmferry profile VM`), `POST
/hosts/{name}/profiles` (every running VM of a host, as `vmferry profile --host H`) and
`GET /vms/{id}/profile` (a VM's stored samples summarised, with the right-sizing advice).

`vmferry profile` samples for ``--duration`` seconds (60 by default, up to a week) and
stores each sample as it is taken, so the API does not hold the request for the run: the
sampling runs in a background thread of the server and the request answers ``202`` once
the first sample is stored (an unknown VM, one that does not run, or a host that does not
answer is its status instead, and nothing is sampled). The samples, and the summary of
all the VM's stored samples, are at ``GET /vms/{id}/profile`` (``Location``) while the run
goes on and after. Profiling makes no job: it changes nothing on the host and needs no
reconciling (a run the server's end stops keeps what it sampled, as Ctrl-C does).

Reading a VM's stored profile is a read of the VM (``vms.read``); sampling it is
``profile`` (self-service: its project's VMs; a whole host's VMs: not for a user bound to
a project).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from vmferry.errors import AlreadyExistsError, NotFoundError
from vmferry.model.workload import ProfileSample
from vmferry.predict.profile import ProfileSummary
from vmferry.server.actions import Services, role_gate, services_of, start_in_thread
from vmferry.server.auth import CurrentUser, authorize, names, require
from vmferry.server.context import Context
from vmferry.server.roles import Action
from vmferry.server.schemas import (
    HostProfileIn,
    HostProfileStarted,
    Problem,
    ProfileIn,
    ProfileOut,
    ProfileStarted,
    ValidationProblem,
)
from vmferry.service.profile import stored_summary
from vmferry.store import accounts

router = APIRouter(tags=["profiles"])
Svc = Annotated[Services, Depends(services_of)]


def summary_json(summary: ProfileSummary) -> dict[str, Any]:
    """A summary as `vmferry profile --json` prints a run (cli/profile_cmd.py: run_json),
    less ``interrupted``."""
    r = summary.rightsizing
    return {
        "vm": summary.vm,
        "host": summary.host,
        "samples": summary.samples,
        "first_at": summary.first_at,
        "last_at": summary.last_at,
        "stats": {
            k: {"mean": v.mean, "p95": v.p95, "max": v.max} for k, v in summary.stats.items()
        },
        "zero_fraction": summary.zero_fraction,
        "rightsizing": {
            "vcpus": r.vcpus,
            "memory_bytes": r.memory_bytes,
            "recommended_vcpus": r.recommended_vcpus,
            "recommended_memory_bytes": r.recommended_memory_bytes,
            "cpu_p95": r.cpu_p95,
            "memory_used_p95_bytes": r.memory_used_p95_bytes,
            "oversized": r.oversized,
            "overutilised": r.overutilised,
            "reason": r.reason,
        },
    }


@router.post(
    "/profiles", response_model=ProfileStarted, status_code=202,
    responses={404: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem},
               422: {"model": ValidationProblem}, 502: {"model": Problem},
               504: {"model": Problem}},
    dependencies=[Depends(names(Action.PROFILE)), Depends(role_gate(Action.PROFILE))],
)  # fmt: skip
def start_profile(
    body: ProfileIn, request: Request, response: Response, user: CurrentUser,
    context: Context, services: Svc,
) -> ProfileStarted:  # fmt: skip
    """Sample the running VM's CPU, memory, disk, network and dirty rate every
    ``interval_s`` for ``duration_s`` (into the store); 202 once the first sample is
    stored, ``Location`` its profile. One run per VM at a time in this server (409)."""
    authorize(request, user, Action.PROFILE, target=body.vm,
              vm_tags=accounts.tags_of(context.store, body.vm))  # fmt: skip
    running = services.running
    running.claim("profile", body.vm, f"{body.vm} is being profiled by this server already; "
                  f"see GET /api/v1/vms/{body.vm}/profile")  # fmt: skip

    def work(started: Any) -> None:
        def on_sample(sample: ProfileSample) -> None:
            started(sample)

        try:
            services.profile(body.vm, host=None, duration_s=body.duration_s,
                             interval_s=body.interval_s, on_sample=on_sample, on_start=None,
                             store=context.store)  # fmt: skip
        finally:
            running.release("profile", body.vm)

    first: ProfileSample = start_in_thread(
        f"vmferry-profile-{body.vm}", work, body.interval_s + services.start_wait_s,
        f"profiling {body.vm}",
    )  # fmt: skip
    url = f"/api/v1/vms/{body.vm}/profile"
    response.headers["Location"] = url
    return ProfileStarted(vm=body.vm, host=first.host, duration_s=body.duration_s,
                          interval_s=body.interval_s, first_sample_at=first.taken_at,
                          profile_url=url)  # fmt: skip


@router.post(
    "/hosts/{name}/profiles", response_model=HostProfileStarted, status_code=202,
    responses={404: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem},
               422: {"model": ValidationProblem}, 502: {"model": Problem},
               504: {"model": Problem}},
    dependencies=[Depends(require(Action.PROFILE, "name"))],
)  # fmt: skip
def start_host_profile(
    name: str, body: HostProfileIn, context: Context, services: Svc
) -> HostProfileStarted:
    """Sample every VM running on the host (as `vmferry profile --host H`) for
    ``duration_s``; 202 once the first samples are stored, with each VM's profile URL.
    409 when one of them is being profiled by this server already (nothing is sampled)."""
    running = services.running
    claimed: list[str] = []

    def claim(_host: str, vms: tuple[str, ...]) -> None:
        try:
            for vm in vms:
                running.claim("profile", vm, f"{vm} on {name} is being profiled by this "
                              f"server already; see GET /api/v1/vms/{vm}/profile")  # fmt: skip
                claimed.append(vm)
        except AlreadyExistsError:
            release()
            raise

    def release() -> None:
        while claimed:
            running.release("profile", claimed.pop())

    def work(started: Any) -> None:
        def on_sample(sample: ProfileSample) -> None:
            started((list(claimed), sample))

        try:
            services.profile(None, host=name, duration_s=body.duration_s,
                             interval_s=body.interval_s, on_sample=on_sample, on_start=claim,
                             store=context.store)  # fmt: skip
        finally:
            release()

    begun: tuple[list[str], ProfileSample] = start_in_thread(
        f"vmferry-profile-host-{name}", work, body.interval_s + services.start_wait_s,
        f"profiling the VMs of {name}",
    )  # fmt: skip
    vms, first = begun
    return HostProfileStarted(host=name, vms=vms, duration_s=body.duration_s,
                              interval_s=body.interval_s, first_sample_at=first.taken_at,
                              profile_urls=[f"/api/v1/vms/{vm}/profile" for vm in vms])  # fmt: skip


@router.get(
    "/vms/{vm_id}/profile", response_model=ProfileOut, responses={404: {"model": Problem}},
    dependencies=[Depends(require(Action.VMS_READ))],
)  # fmt: skip
def get_profile(
    vm_id: str, context: Context, services: Svc,
    since: Annotated[datetime | None, Query(description="only samples since (ISO 8601)")] = None,
) -> ProfileOut:  # fmt: skip
    """The VM's stored profile samples (since ``since``, an ISO 8601 time) summarised: mean,
    p95 and maximum per metric, and the right-sizing advice; ``sampling`` says whether this
    server is profiling it now."""
    after = None if since is None else (since if since.tzinfo else
                                        since.replace(tzinfo=UTC)).isoformat()  # fmt: skip
    # the flag before the samples: a run stores its last sample before it stops counting as
    # active, so "not sampling" means every sample is in the summary below (read the other
    # way round, a run ending between the two reads showed a summary short of its last one)
    sampling = services.running.active("profile", vm_id)
    summary = stored_summary(vm_id, since=after, store=context.store)
    if summary is None:
        raise NotFoundError(f"no profile samples of {vm_id!r}; POST /api/v1/profiles "
                            "starts profiling it")  # fmt: skip
    return ProfileOut(**summary_json(summary), sampling=sampling)
