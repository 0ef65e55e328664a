"""The API's request and response bodies (pydantic): what /openapi.json documents.

Responses are built from :mod:`vmferry.model` objects through
:func:`vmferry.model.jsonable.to_jsonable`, so a job reads the same as `vmferry job show
--json`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from vmferry.model.account import MAX_TAGS

Tag = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/=@-]{0,127}$", max_length=128)
]


class Problem(BaseModel):
    """An error: one line, and for a role's refusal the rule that refused."""

    detail: str
    rule: str | None = None


class FieldError(BaseModel):
    loc: list[str | int]
    path: str
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """A malformed request (422): every bad field with its path."""

    detail: list[FieldError]


class HostOut(BaseModel):
    name: str
    uri: str
    migration_uri: str | None
    shell: str | None
    link_mbps: int | None
    migration_tls: bool


class VmOut(BaseModel):
    """A VM as a host reports it now, with the tags vmferry keeps for it."""

    name: str
    uuid: str
    host: str
    state: str
    persistent: bool
    vcpus: int
    memory_bytes: int
    cpu_model: str | None
    arch: str | None
    machine: str | None
    tags: list[str]
    spec: dict[str, Any]


class VmPage(BaseModel):
    items: list[VmOut]
    total: int = Field(description="how many VMs match the filters")
    limit: int
    offset: int
    next_offset: int | None = Field(description="the offset of the next page; null: last page")
    unreachable: dict[str, str] = Field(
        description="hosts that did not answer (their VMs are missing from the list), and why"
    )


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[Tag] = Field(max_length=MAX_TAGS, description="the VM's tags, replacing all")


class TagsOut(BaseModel):
    vm: str
    tags: list[str]


class JobEventOut(BaseModel):
    at: str
    kind: str
    message: str
    data: dict[str, Any]


class JobOut(BaseModel):
    """A migration job, as `vmferry job show --json` prints it."""

    id: str
    kind: str
    vm: str
    source: str
    destination: str
    status: str
    created_at: str
    updated_at: str
    options: dict[str, Any]
    reason: str | None
    result: dict[str, Any] | None
    owner_pid: int | None
    owner_start_ticks: int | None
    owner_id: str | None
    cancel_requested: bool
    events: list[JobEventOut]


class AuditOut(BaseModel):
    at: str
    user: str | None
    remote: str
    action: str
    target: str | None
    result: str
    detail: dict[str, Any]


class UserOut(BaseModel):
    name: str
    role: str
    project: str | None
    created_at: str
    has_password: bool
