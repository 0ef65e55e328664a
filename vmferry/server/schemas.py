"""The API's request and response bodies (pydantic): what /openapi.json documents.

Responses are built from :mod:`vmferry.model` objects through
:func:`vmferry.model.jsonable.to_jsonable`, so a job reads the same as `vmferry job show
--json`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

from vmferry.assess.stream_features import MAX_PARALLEL, validate
from vmferry.errors import BadInputError
from vmferry.model.account import MAX_TAGS
from vmferry.model.migration import Compression

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
    guest_os: str | None = Field(None, description="libosinfo id from the domain's metadata")
    tags: list[str]
    spec: dict[str, Any]
    devices_read: bool = Field(
        True, description="false: libvirt held the VM for a migration job, so its devices "
        "were not read (spec lists no disks and no NICs)",
    )  # fmt: skip


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
    token_expires_at: str | None = Field(None, description="ISO 8601, UTC; null: never")


# -- actions started through the API (check, predict, profile, plans, port profiles, imports)

VmName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class CheckIn(BaseModel):
    """What `vmferry check VM --to HOST [--copy-storage [--to-pool P]]` takes."""

    model_config = ConfigDict(extra="forbid")

    vm: VmName
    to: VmName
    copy_storage: bool = False
    to_pool: VmName | None = None


class FindingOut(BaseModel):
    id: str
    severity: str
    message: str
    remediation: str


class CheckOut(BaseModel):
    """The pre-flight report, as `vmferry check --json` prints it."""

    vm: str
    destination: str
    findings: list[FindingOut]
    blocked: bool = Field(description="a blocker stands: the move would be refused")


# zstd compresses multifd channels (parallel 2 or more); xbzrle works on one stream only
STREAM_RULES: list[JsonValue] = [
    {"if": {"properties": {"compression": {"const": "zstd"}}, "required": ["compression"]},
     "then": {"properties": {"parallel": {"minimum": 2}}, "required": ["parallel"]}},
    {"if": {"properties": {"compression": {"const": "xbzrle"}}, "required": ["compression"]},
     "then": {"properties": {"parallel": {"maximum": 1}}}},
]  # fmt: skip


def check_stream(parallel: int, compression: str) -> None:
    """A request body's stream, as the CLI judges it (:func:`validate`); its one line as a
    ``ValueError`` (pydantic's 422)."""
    try:
        validate(parallel, Compression(compression))
    except BadInputError as exc:
        raise ValueError(exc.message) from exc


class PredictionIn(BaseModel):
    """What `vmferry predict VM --to HOST` takes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": STREAM_RULES})

    vm: VmName
    to: VmName
    max_downtime_ms: int = Field(300, ge=10, le=60_000)
    bandwidth_mib_s: int | None = Field(None, ge=1, le=1_000_000)
    parallel: int = Field(
        0, ge=0, le=MAX_PARALLEL, description="the move's multifd channels, `--parallel`"
    )
    compression: Literal["none", "zstd"] = Field(
        "none", description="`zstd` (with parallel 2 or more): its ratio is measured on a "
        "sample of the guest's memory, `--compress`",
    )  # fmt: skip

    @model_validator(mode="after")
    def _stream_fits(self) -> PredictionIn:
        check_stream(self.parallel, self.compression)
        return self


class PredictionInputsOut(BaseModel):
    memory_bytes: int
    dirty_rate_bytes_s: int
    link_bytes_s: int
    zero_fraction: float
    downtime_limit_ms: int
    channels: int = 1
    compression_ratio: float = 1.0


class PredictionOut(BaseModel):
    """As `vmferry predict --json` prints it."""

    vm: str
    destination: str
    converges: bool
    total_time_ms: int
    guest_pause_ms: int = Field(description="the guest's pause: QEMU's STOP -> RESUME")
    downtime_ms: int = Field(description="libvirt's downtime figure for that pause")
    transferred_bytes: int
    inputs: PredictionInputsOut


class ProfileIn(BaseModel):
    """What `vmferry profile VM [--duration S] [--interval S]` takes."""

    model_config = ConfigDict(extra="forbid")

    vm: VmName
    duration_s: float = Field(60, ge=0.2, le=86_400)
    interval_s: float = Field(1, ge=0.2, le=60)


class ProfileStarted(BaseModel):
    """A profiling run started in the server; its samples are stored as they are taken."""

    vm: str
    host: str
    duration_s: float
    interval_s: float
    first_sample_at: str
    profile_url: str


class StatOut(BaseModel):
    mean: float
    p95: float
    max: float


class RightSizingOut(BaseModel):
    vcpus: int
    memory_bytes: int
    recommended_vcpus: int
    recommended_memory_bytes: int
    cpu_p95: float | None
    memory_used_p95_bytes: int | None
    oversized: bool
    overutilised: bool
    reason: str


class ProfileOut(BaseModel):
    """The VM's stored samples summarised, as `vmferry profile --json` prints a run, and
    whether this server is sampling it now."""

    vm: str
    host: str
    samples: int
    sampling: bool
    first_at: str | None
    last_at: str | None
    stats: dict[str, StatOut]
    zero_fraction: float | None
    rightsizing: RightSizingOut


class PlanIn(BaseModel):
    """The plan file's YAML text (docs/planning.md), and how to solve it."""

    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(min_length=1, max_length=1_000_000, description="the plan file's text")
    method: Literal["auto", "heuristic", "cpsat"] = "auto"
    time_limit_s: float = Field(10.0, ge=0.1, le=600)


class PlanOut(BaseModel):
    """A plan as `vmferry plan show --json` prints it."""

    id: str
    name: str | None
    status: str
    reason: str | None
    requested: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    makespan_s: float | None
    lower_bound_s: float | None
    lower_bound_parts: dict[str, Any] | None
    method: str | None
    actual_makespan_s: float | None
    waves: list[Any]
    items: list[dict[str, Any]]
    schedule: dict[str, Any]


class PlanSummaryOut(BaseModel):
    """A plan in the list: its `plan show --json` document without items and schedule."""

    id: str
    name: str | None
    status: str
    reason: str | None
    requested: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    makespan_s: float | None
    vms: int


class GanttBarOut(BaseModel):
    vm: str
    wave: int
    source: str
    destination: str
    strategy: str
    status: str
    predicted_start_s: float
    predicted_end_s: float
    actual_start_s: float | None
    actual_end_s: float | None


class GanttOut(BaseModel):
    plan: str
    makespan_s: float | None
    actual_makespan_s: float | None
    bars: list[GanttBarOut]


ProfileName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,23}$")]


class BandwidthOut(BaseModel):
    average_kib_s: int
    peak_kib_s: int | None
    burst_kib: int | None


class NetProfileOut(BaseModel):
    """A named port profile, as `vmferry netprofile show --json` prints it."""

    name: str
    network: str
    inbound: BandwidthOut | None
    outbound: BandwidthOut | None
    acl: list[str] | None = Field(description="null: no filtering; []: nothing allowed")
    security_level: str
    vni: int | None


class NetProfileIn(BaseModel):
    """What `vmferry netprofile define NAME` takes (it replaces a profile of that name)."""

    model_config = ConfigDict(extra="forbid")

    network: str = Field(min_length=1, max_length=64)
    in_kib_s: int | None = Field(None, ge=1, le=4_000_000)
    out_kib_s: int | None = Field(None, ge=1, le=4_000_000)
    burst_kib: int | None = Field(None, ge=1, le=1_000_000)
    allow: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        None, max_length=64, description="ACL rules PROTO[:PORTS][@PEER]; null: no filtering"
    )
    level: ProfileName = "default"
    vni: int | None = Field(None, ge=1, le=16_777_215)


class RemovedOut(BaseModel):
    removed: list[str]


class NetProfileApplied(BaseModel):
    """What putting a named profile on a host changed, as `vmferry netprofile apply NAME
    --host H --json` prints it."""

    host: str
    profile: str
    network: str
    portgroup: Literal["added", "modified", "unchanged"]
    rules: Literal["written", "unchanged", "none", "not-possible"]
    bound_macs: list[str]
    chain_was_there: bool
    notes: list[str]
    shaped: list[str]
    shaped_uplinks: dict[str, list[str]]


class SegmentOut(BaseModel):
    network: str | None
    bridge: str | None
    vni: int | None


class PortOut(BaseModel):
    """One NIC of a VM and the portgroup (profile) it uses."""

    vm: str
    mac: str
    segment: SegmentOut
    profile: str | None
    target_dev: str | None
    addresses: list[str]
    interface_inbound: BandwidthOut | None
    interface_outbound: BandwidthOut | None


class CaptureOut(BaseModel):
    """A VM's NICs read from its host and the profiles kept by name, as `vmferry netprofile
    capture VM --json` prints them."""

    vm: str
    host: str
    ports: list[PortOut]
    profiles: list[NetProfileOut]


class HostProfileIn(BaseModel):
    """What `vmferry profile --host H [--duration S] [--interval S]` takes."""

    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(60, ge=0.2, le=86_400)
    interval_s: float = Field(1, ge=0.2, le=60)


class HostProfileStarted(BaseModel):
    """Every running VM of a host being profiled in the server."""

    host: str
    vms: list[str]
    duration_s: float
    interval_s: float
    first_sample_at: str
    profile_urls: list[str]


AbsolutePath = Annotated[str, StringConstraints(pattern=r"^/", min_length=1, max_length=4096)]


class ImportIn(BaseModel):
    """What `vmferry import SOURCE --to HOST` takes. ``source`` and ``workdir`` are paths on
    the server, inside the directories of the setting ``server.import_dirs``."""

    model_config = ConfigDict(extra="forbid")

    source: AbsolutePath
    to: VmName
    name: VmName | None = None
    network_map: list[Annotated[str, StringConstraints(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=64, description="SOURCE=DESTINATION; '*=net' maps all"
    )
    storage_pool: VmName = "default"
    disk_bus: Literal["virtio", "sata", "auto"] = "auto"
    nic_model: Literal["virtio", "e1000e", "auto"] = "auto"
    convert_guest: Literal["auto", "always", "never"] = "auto"
    console_log: AbsolutePath | None = Field(None, description="a file on the destination host")
    start: bool = False
    dry_run: bool = False
    virt_type: Literal["kvm", "qemu", "auto"] = "auto"
    max_virtual_size_tib: float = Field(16, gt=0, le=1024)
    vcpus: int = Field(2, ge=1, le=1024)
    memory_mb: int = Field(2048, ge=16, le=16_777_216)
    firmware: Literal["bios", "efi"] = "bios"
    guest_family: Literal["linux", "windows", "other", "unknown"] = "unknown"
    mac: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=32
    )
    workdir: AbsolutePath | None = None
