"""`POST /checks`: the pre-flight checks of a live move, as `vmferry check VM --to HOST`.

It changes nothing and takes seconds (both hosts are asked), so it answers at once with the
report; a blocked move is a report with ``"blocked": true`` (the command's exit code 3).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from vmferry.errors import BadInputError
from vmferry.server.actions import Services, role_gate, services_of
from vmferry.server.auth import CurrentUser, authorize, names
from vmferry.server.context import Context
from vmferry.server.roles import Action
from vmferry.server.schemas import CheckIn, CheckOut, Problem, ValidationProblem
from vmferry.service.check import CheckReport
from vmferry.store import accounts

router = APIRouter(prefix="/checks", tags=["checks"])


def report_json(report: CheckReport) -> dict[str, Any]:
    """The `vmferry check --json` document (cli/check_cmd.py prints the same)."""
    return {
        "vm": report.vm,
        "destination": report.destination,
        "findings": [
            {
                "id": f.id,
                "severity": f.severity.value,
                "message": f.message,
                "remediation": f.remediation,
            }
            for f in report.findings
        ],
        "blocked": report.blocked,
    }


@router.post(
    "", response_model=CheckOut,
    responses={404: {"model": Problem}, 413: {"model": Problem},
               422: {"model": ValidationProblem}, 502: {"model": Problem}},
    dependencies=[Depends(names(Action.CHECK)), Depends(role_gate(Action.CHECK))],
)  # fmt: skip
def check(
    body: CheckIn, request: Request, user: CurrentUser, context: Context,
    services: Annotated[Services, Depends(services_of)],
) -> CheckOut:  # fmt: skip
    """Run every pre-flight check for moving the VM live to the host; changes nothing."""
    authorize(request, user, Action.CHECK, target=body.vm,
              vm_tags=accounts.tags_of(context.store, body.vm))  # fmt: skip
    if body.to_pool is not None and not body.copy_storage:
        raise BadInputError("to_pool names where copied disks go: give it with copy_storage")
    report = services.check(body.vm, body.to, copy_storage=body.copy_storage,
                            to_pool=body.to_pool)  # fmt: skip
    return CheckOut(**report_json(report))
