"""`POST /migrations`: start moving a VM (live, post-copy, warm or cold), as
`vmferry migrate` does; 202 with the job and its URL (``Location``) once the job exists.

``Idempotency-Key`` (1 to 255 characters): the same user sending the same key with the
same body gets the same job again, without a second move; the key with another body, or
while the first request with it is still starting: 409.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vmferry.assess.stream_features import MAX_PARALLEL
from vmferry.errors import AlreadyExistsError, BadInputError, VmferryError
from vmferry.model.account import User
from vmferry.model.migration import Compression, Job, MigrationOptions, Strategy
from vmferry.predict.strategy import StrategyChoice, with_choice
from vmferry.server.auth import CurrentUser, authorize, names
from vmferry.server.context import Context
from vmferry.server.project_rules import check_self_service_move
from vmferry.server.roles import Action
from vmferry.server.routers.jobs import job_json
from vmferry.server.schemas import (
    STREAM_RULES,
    JobOut,
    Problem,
    ValidationProblem,
    check_stream,
)
from vmferry.store import accounts, idempotency

router = APIRouter(prefix="/migrations", tags=["migrations"])


class MigrationIn(BaseModel):
    """What `vmferry migrate VM --to HOST` takes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": STREAM_RULES})

    vm: str = Field(min_length=1, max_length=255)
    to: str = Field(min_length=1, max_length=255)
    strategy: Literal["live", "postcopy", "warm", "cold", "warm-incremental", "auto"] = Field(
        "live", description="`auto`: vmferry chooses from the pre-flight checks and a "
        "one-second measurement against max_downtime_ms, and records why",
    )  # fmt: skip
    max_downtime_ms: int = Field(300, ge=1, le=60_000)
    timeout_s: float = Field(600, gt=0, le=86_400)
    copy_storage: bool = False
    bandwidth_mib_s: int | None = Field(None, ge=1, le=1_000_000)
    queue: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
        description="PostgreSQL: the workers' queue to run it (`vmferry worker --queue`); "
        "default `vmferry`. Ignored where the server runs moves itself (SQLite).",
    )  # fmt: skip
    parallel: int = Field(
        0, ge=0, le=MAX_PARALLEL, description="live: multifd channels (2 or more), `--parallel`"
    )
    compression: Literal["none", "zstd", "xbzrle"] = Field(
        "none", description="live: `zstd` (with parallel) or `xbzrle` (without), `--compress`"
    )

    @model_validator(mode="after")
    def _stream_fits(self) -> MigrationIn:
        check_stream(self.parallel, self.compression)
        return self


def _options(body: MigrationIn, strategy: Strategy) -> MigrationOptions:
    return MigrationOptions(strategy=strategy, max_downtime_ms=body.max_downtime_ms,
                            timeout_s=body.timeout_s, copy_storage=body.copy_storage,
                            bandwidth_mib_s=body.bandwidth_mib_s, parallel=body.parallel,
                            compression=Compression(body.compression))  # fmt: skip


def _started(response: Response, job_id: str, context: Context) -> JobOut:
    response.headers["Location"] = f"/api/v1/jobs/{job_id}"
    return JobOut(**job_json(context.store.get_job(job_id)))


@router.post(
    "", response_model=JobOut, status_code=202,
    responses={404: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem},
               422: {"model": ValidationProblem}, 502: {"model": Problem},
               504: {"model": Problem}},
    dependencies=[Depends(names(Action.MIGRATE))],
)  # fmt: skip
def start_migration(
    body: MigrationIn, request: Request, response: Response, user: CurrentUser,
    context: Context,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JobOut:  # fmt: skip
    """Start moving a VM; the job (`GET /jobs/{id}`, its events at `/jobs/{id}/events`)."""
    authorize(request, user, Action.MIGRATE, target=body.vm,
              vm_tags=accounts.tags_of(context.store, body.vm))  # fmt: skip
    if body.strategy != "auto":  # auto: once the strategy is chosen (_begin)
        _self_service(body.strategy, request, user, context)
    if context.moves is None:
        raise BadInputError("this server does not start moves")
    if idempotency_key is None:
        return _started(response, _begin(body, request, user, context).id, context)
    return _start_once(body, request, response, user, context, idempotency_key)


def _self_service(strategy: str, request: Request, user: User, context: Context) -> None:
    """Self-service: only the strategies and time windows its project's policy allows."""
    check_self_service_move(context.store, user, strategy, datetime.now(UTC), request=request)


def _begin(body: MigrationIn, request: Request, user: User, context: Context) -> Job:
    """Start the move (``auto``: the strategy chosen first, and the choice checked against a
    self-service user's policy); its job."""
    assert context.moves is not None
    if body.strategy != "auto":
        return context.moves.start(body.vm, body.to, _options(body, Strategy(body.strategy)),
                                   body.queue)  # fmt: skip
    choose = context.choose or _choose_move
    asked = _options(body, Strategy.LIVE)
    choice = choose(body.vm, body.to, asked)
    _self_service(choice.strategy.value, request, user, context)
    return context.moves.start(body.vm, body.to, with_choice(asked, choice), body.queue,
                               choice.reason)  # fmt: skip


def _choose_move(vm: str, to: str, options: MigrationOptions) -> StrategyChoice:
    from vmferry.service.auto_strategy import choose_move

    return choose_move(vm, to, options)


def _start_once(
    body: MigrationIn, request: Request, response: Response, user: User, context: Context,
    key: str,
) -> JobOut:  # fmt: skip
    digest = hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()
    claim = idempotency.claim(context.store, user.name, key, digest)
    if not claim.new:
        if not claim.same_request:
            raise AlreadyExistsError(f"Idempotency-Key {key!r} was used for another request")
        if claim.job_id is None:
            raise AlreadyExistsError(f"the request with Idempotency-Key {key!r} is still "
                                     "starting; ask again in a moment")  # fmt: skip
        response.headers["Idempotency-Replayed"] = "true"
        return _started(response, claim.job_id, context)
    assert context.moves is not None
    try:
        job = _begin(body, request, user, context)
    except VmferryError:
        idempotency.forget(context.store, user.name, key)  # nothing started: free it again
        raise
    idempotency.settle(context.store, user.name, key, job.id)
    return _started(response, job.id, context)
