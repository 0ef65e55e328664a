"""Live migration: options, progress, escalations, verification and the result."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vmferry.model.agent import AgentCheck
from vmferry.model.probe import ProbeResult


class Strategy(enum.StrEnum):
    """``live``: pre-copy only. ``postcopy``: pre-copy, switching to post-copy where pre-copy
    would need the throttle (instead of it).
    ``warm``: save the running VM's state to a file both hosts see, restore it on the
    destination. ``cold``: shut the VM down, copy what is not shared, start it there.
    ``warm-incremental``: copy the disks only the source sees while the VM runs, then what
    changed, round after round (checkpoints); stop it, copy the last changes, boot it
    there."""

    LIVE = "live"
    POSTCOPY = "postcopy"
    WARM = "warm"
    COLD = "cold"
    WARM_INCREMENTAL = "warm-incremental"

    @property
    def offline(self) -> bool:
        """Whether the VM stops on the source and runs again on the destination, rather
        than moving live (warm, cold, warm-incremental)."""
        return self in (Strategy.WARM, Strategy.COLD, Strategy.WARM_INCREMENTAL)

    @property
    def boots(self) -> bool:
        """Whether the guest boots again on the destination (cold, warm-incremental)."""
        return self in (Strategy.COLD, Strategy.WARM_INCREMENTAL)


class TlsMode(enum.StrEnum):
    """Whether a live migration's stream is encrypted (libvirt's ``VIR_MIGRATE_TLS``), like
    vMotion's encrypted mode: ``required`` (refuse to move in the clear), ``preferred``
    (encrypt when both hosts have migration certificates), ``off``."""

    REQUIRED = "required"
    PREFERRED = "preferred"
    OFF = "off"


class Compression(enum.StrEnum):
    """How a live migration's stream compresses memory pages: ``zstd`` (QEMU compresses each
    multifd channel's pages; needs ``parallel``), ``xbzrle`` (sends a changed page as its
    difference from the copy sent before: for guests that rewrite the same pages; not with
    ``parallel``), ``none``."""

    NONE = "none"
    ZSTD = "zstd"
    XBZRLE = "xbzrle"


class JobStatus(enum.StrEnum):
    PENDING = "pending"  # created, checks running
    RUNNING = "running"  # the migration is under way
    COMPLETED = "completed"
    FAILED = "failed"  # the source VM is intact and running
    CANCELLED = "cancelled"  # by Ctrl-C or `vmferry job cancel`; the source is running

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class MigrationOptions:
    strategy: Strategy = Strategy.LIVE
    max_downtime_ms: int = 300
    timeout_s: float = 600.0
    copy_storage: bool = False
    bandwidth_mib_s: int | None = None  # None: the link rate vmferry knows, else unlimited
    # Experimental: cap the vCPUs (cgroup quota) from the start when the model predicts slow
    # convergence. Off by default: in the TCG lab a guest migrated while capped hung after
    # the switchover (docs/performance.md).
    precopy_cap: bool = False
    # Warm and cold moves (vmferry.engine.offline)
    state_dir: str | None = None  # warm: where the saved state goes (default: a shared pool)
    shutdown_timeout_s: float = 120.0  # cold: how long the guest may take to power off
    force: bool = False  # cold: power the VM off if it ignores the ACPI shutdown
    # cold, or live with copy_storage: remove the source's copies after a verified move
    delete_source_disks: bool = False
    tls: TlsMode | None = None  # live: None takes the migration.tls setting
    # fail the job when nothing beyond liveness proves the move, or a declared probe does
    # not answer after it
    require_verification: bool = False
    # live: the stream's channels (multifd; 0 or 1: one stream) and its compression
    parallel: int = 0
    compression: Compression = Compression.NONE
    # before any change: back up the VM's disks into this pool of the source host
    backup_pool: str | None = None
    # a move whose verification fails with the VM on the destination is moved back (exit 5)
    rollback: bool = False
    # live with copy_storage, and cold: the destination pool the copied disks go into
    # (None: the pool that holds the same path there)
    to_pool: str | None = None


@dataclass(frozen=True)
class ProgressSample:
    """One reading of the migration job (libvirt's job stats), taken at ``elapsed_ms``."""

    elapsed_ms: int
    iteration: int
    memory_total_bytes: int
    memory_processed_bytes: int
    memory_remaining_bytes: int
    dirty_rate_bytes_s: int
    throughput_bytes_s: int
    expected_downtime_ms: int | None = None
    throttle_pct: int = 0
    postcopy: bool = False
    disk_remaining_bytes: int = 0
    # --copy-storage: the disks' mirror (libvirt copies them before memory: until they are
    # in sync the memory counters stay at 0)
    disk_total_bytes: int = 0
    disk_processed_bytes: int = 0
    disk_throughput_bytes_s: int = 0

    @property
    def copying_disks(self) -> bool:
        """The disks' mirror runs and memory has not begun to move."""
        return self.disk_total_bytes > 0 and self.memory_processed_bytes == 0

    @property
    def moved_bytes(self) -> int:
        """Memory and disk data sent so far."""
        return self.memory_processed_bytes + self.disk_processed_bytes


class EscalationStep(enum.StrEnum):
    DOWNTIME = "downtime"  # raise the downtime limit
    THROTTLE = "throttle"  # let auto-converge slow the guest's vCPUs more
    POSTCOPY = "postcopy"  # switch to post-copy
    ABORT = "abort"  # give up at the timeout; the source keeps running


@dataclass(frozen=True)
class Escalation:
    at_ms: int
    step: EscalationStep
    value: int | None
    reason: str


@dataclass(frozen=True)
class Verification:
    """What vmferry proved after the move; ``None`` where the VM offers no such witness."""

    running_on_destination: bool
    absent_on_source: bool
    heartbeat_max_gap_ms: int | None = None
    memory_integrity: str | None = None  # ok | fail | None (no witness)
    network_max_gap_ms: int | None = None
    problems: tuple[str, ...] = ()
    # what proved it: agent | probes | lab | liveness-only (running there, gone here: no more)
    level: str = "liveness-only"
    probes: tuple[ProbeResult, ...] = ()
    warnings: tuple[str, ...] = ()  # checks that could not prove the service (not failures
    # unless the move required verification)
    agent: AgentCheck | None = None  # the guest agent's checks, when the VM has an agent
    # a cold move of a VM that was off: defined on the destination, off as it was, with its
    # disk copies there (it counts as running_on_destination does for a running VM)
    left_off: bool = False

    @property
    def on_destination(self) -> bool:
        """The VM is where the move put it: running there, or defined there and off as it
        was before a cold move."""
        return self.running_on_destination or self.left_off

    @property
    def passed(self) -> bool:
        return (
            self.on_destination
            and self.absent_on_source
            and self.memory_integrity != "fail"
            and not self.problems
        )


@dataclass(frozen=True)
class DiskCopy:
    """One disk a move copied to the destination (``--copy-storage``) and what vmferry
    checked of the copy: the destination's volume is the disk the VM runs on there, of the
    source's capacity and format. ``checks`` says what was looked at, one line each. The
    content is libvirt's mirror (the switchover waits for it to be in sync); vmferry does
    not read it again (docs/storage.md)."""

    target: str
    source_path: str | None
    destination_path: str | None
    verified: bool
    checks: tuple[str, ...] = ()
    source_removed: bool = False  # --delete-source-disks: the source's copy removed after


@dataclass(frozen=True)
class MigrationResult:
    """The `vmferry migrate --json` document (docs/json.md)."""

    job_id: str
    vm: str
    source: str
    destination: str
    strategy: Strategy
    status: JobStatus
    reason: str | None
    total_time_ms: int | None
    downtime_ms: int | None
    transferred_bytes: int | None
    iterations: int | None
    escalations: tuple[Escalation, ...] = ()
    verification: Verification | None = None
    encrypted: bool = False  # the migration stream ran over TLS
    # the guest's pause as vmferry measured it (live: from the source's pause event to the
    # destination's resume event, docs/performance.md); None where it was not measured
    guest_pause_ms: int | None = None
    # --strategy auto: why this strategy was chosen (None when the user named it)
    strategy_reason: str | None = None
    disks: tuple[DiskCopy, ...] = ()  # --copy-storage: the disks copied, as checked after


@dataclass(frozen=True)
class JobEvent:
    at: str  # ISO 8601 UTC timestamp
    kind: str  # created | status | escalation | progress | verification | note
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """A persisted migration job (a state machine: pending -> running -> finished)."""

    id: str
    kind: str  # migrate
    vm: str
    source: str
    destination: str
    status: JobStatus
    created_at: str
    updated_at: str
    options: MigrationOptions
    reason: str | None = None
    result: MigrationResult | None = None
    owner_pid: int | None = None  # the vmferry process driving it
    owner_start_ticks: int | None = None
    owner_id: str | None = None  # its lease (vmferry.model.lease)
    cancel_requested: bool = False
    events: tuple[JobEvent, ...] = ()
