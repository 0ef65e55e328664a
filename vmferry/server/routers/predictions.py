"""`POST /predictions`: what a live move of a VM would take, as `vmferry predict VM --to
HOST`: the VM is measured for about a second, so it answers at once with the prediction."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from vmferry.model.migration import Compression
from vmferry.server.actions import Services, role_gate, services_of
from vmferry.server.auth import CurrentUser, authorize, names
from vmferry.server.context import Context
from vmferry.server.roles import Action
from vmferry.server.schemas import PredictionIn, PredictionOut, Problem, ValidationProblem
from vmferry.service.predict import prediction_json
from vmferry.store import accounts

router = APIRouter(prefix="/predictions", tags=["predictions"])


@router.post(
    "", response_model=PredictionOut,
    responses={404: {"model": Problem}, 413: {"model": Problem},
               422: {"model": ValidationProblem}, 502: {"model": Problem}},
    dependencies=[Depends(names(Action.PREDICT)), Depends(role_gate(Action.PREDICT))],
)  # fmt: skip
def predict(
    body: PredictionIn, request: Request, user: CurrentUser, context: Context,
    services: Annotated[Services, Depends(services_of)],
) -> PredictionOut:  # fmt: skip
    """Predict total time, downtime, bytes and whether pre-copy converges (the VM is
    measured for about a second; nothing changes)."""
    authorize(request, user, Action.PREDICT, target=body.vm,
              vm_tags=accounts.tags_of(context.store, body.vm))  # fmt: skip
    report = services.predict(body.vm, body.to, max_downtime_ms=body.max_downtime_ms,
                              bandwidth_mib_s=body.bandwidth_mib_s, store=context.store,
                              parallel=body.parallel,
                              compression=Compression(body.compression))  # fmt: skip
    return PredictionOut(**prediction_json(report))
