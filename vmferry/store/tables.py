"""SQLAlchemy ORM tables. Change them only together with a new Alembic migration.

``tests/unit/test_store.py`` compares this metadata with the migrated schema, so a forgotten
migration fails the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vmferry.model import Host

# Deterministic constraint names, so migrations can refer to (and drop) them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class HostRow(Base):
    """A libvirt host registered with vmferry (see :class:`vmferry.model.Host`)."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    migration_uri: Mapped[str | None] = mapped_column(Text)
    shell: Mapped[str | None] = mapped_column(Text)
    link_mbps: Mapped[int | None] = mapped_column(Integer)
    migration_tls: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @classmethod
    def from_model(cls, host: Host) -> HostRow:
        return cls(name=host.name, uri=host.uri, migration_uri=host.migration_uri,
                   shell=host.shell, link_mbps=host.link_mbps,
                   migration_tls=host.migration_tls)  # fmt: skip

    def to_model(self) -> Host:
        return Host(name=self.name, uri=self.uri, migration_uri=self.migration_uri,
                    shell=self.shell, link_mbps=self.link_mbps,
                    migration_tls=bool(self.migration_tls))  # fmt: skip


class SettingRow(Base):
    """A setting the user changed (see :mod:`vmferry.model.settings`); unset keys are not
    stored and take their default."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    """A migration job (see :class:`vmferry.model.migration.Job`); rows leave the store only
    as model objects, built in :mod:`vmferry.store.db`."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_vm_status", "vm", "status"),
        Index("ix_jobs_created_at", "created_at"),
        # one unfinished job per VM: two moves of one VM cannot both start (migration 0013)
        Index(
            "uq_jobs_vm_unfinished",
            "vm",
            unique=True,
            sqlite_where=text("status IN ('pending', 'running')"),
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    vm: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(255))
    destination: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_start_ticks: Mapped[int | None] = mapped_column(BigInteger)
    owner_id: Mapped[str | None] = mapped_column(String(32))  # its lease (leases.owner_id)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobEventRow(Base):
    """One entry of a job's history (see :class:`vmferry.model.migration.JobEvent`)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class ProfileSampleRow(Base):
    """One workload sample of a VM (see :class:`vmferry.predict.profile.ProfileSample`)."""

    __tablename__ = "profile_samples"
    __table_args__ = (Index("ix_profile_samples_vm_taken_at", "vm", "taken_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)


class PredictionRow(Base):
    """A migration job's prediction, made before it ran, and its actual figures after
    (see :class:`vmferry.predict.model.PredictionRecord`)."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_created_at", "created_at"),)

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    vm: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(255))
    destination: Mapped[str] = mapped_column(String(255))
    predicted: Mapped[dict[str, Any]] = mapped_column(JSON)
    actual: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PlanRow(Base):
    """A wave plan (see :class:`vmferry.model.plan_run.PlanRecord`)."""

    __tablename__ = "plans"
    __table_args__ = (Index("ix_plans_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    requested: Mapped[str | None] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_start_ticks: Mapped[int | None] = mapped_column(BigInteger)
    owner_id: Mapped[str | None] = mapped_column(String(32))  # its lease (leases.owner_id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PlanItemRow(Base):
    """One VM of a wave plan (see :class:`vmferry.model.plan_run.PlanItem`). ``position``
    is the item's order in the schedule (``order`` is an SQL keyword)."""

    __tablename__ = "plan_items"

    plan_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True
    )
    vm: Mapped[str] = mapped_column(String(255), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(255))
    destination: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(16))
    strategy_reason: Mapped[str] = mapped_column(Text)
    predicted_start_s: Mapped[int] = mapped_column(Integer)
    predicted_end_s: Mapped[int] = mapped_column(Integer)
    predicted_s: Mapped[int] = mapped_column(Integer)
    predicted_downtime_ms: Mapped[int | None] = mapped_column(Integer)
    prediction: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    actual_total_ms: Mapped[int | None] = mapped_column(Integer)
    actual_downtime_ms: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class LeaseRow(Base):
    """The lease of a vmferry process that drives jobs or plan runs (see
    :class:`vmferry.model.lease.Lease`); times are the store's clock."""

    __tablename__ = "leases"

    owner_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    node: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    start_ticks: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VmProbesRow(Base):
    """A VM's declared service probes (see :class:`vmferry.model.probe.VmProbes`)."""

    __tablename__ = "vm_probes"

    vm: Mapped[str] = mapped_column(String(255), primary_key=True)
    probes: Mapped[list[str]] = mapped_column(JSON)
    health: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # argv (0009)
    netns: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserRow(Base):
    """A user of the server (see :class:`vmferry.model.account.User`). The token is stored
    as its public id and an argon2 hash of the whole token; ``removed_at`` set: the user was
    removed (its token no longer works, its name can be added again)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    project: Mapped[str | None] = mapped_column(String(64))
    token_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # 0014


class AuditRow(Base):
    """One entry of the audit trail (see :class:`vmferry.model.account.AuditEntry`). The
    database refuses UPDATE and DELETE on it (triggers of migration 0010)."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_user_at", "user", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user: Mapped[str | None] = mapped_column(String(64))
    remote: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class VmTagRow(Base):
    """One tag of a VM, by the VM's name (``project:P`` puts it in project P)."""

    __tablename__ = "vm_tags"
    __table_args__ = (Index("ix_vm_tags_tag", "tag"),)

    vm: Mapped[str] = mapped_column(String(255), primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), primary_key=True)


class ApiRequestRow(Base):
    """A POST that started work through the API, by its user's Idempotency-Key: the same
    key again gives the same job (``job_id`` None: still starting)."""

    __tablename__ = "api_requests"

    user: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VmHookRow(Base):
    """A hook a VM declares (see :class:`vmferry.model.hook.Hook`), by the VM's name; a
    webhook's secret is not stored, only the name of the environment variable holding it."""

    __tablename__ = "vm_hooks"

    vm: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(Text)
    timeout_ms: Mapped[int] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer)
    required: Mapped[bool] = mapped_column(Boolean)
    secret_env: Mapped[str | None] = mapped_column(String(128))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProjectPolicyRow(Base):
    """What a project's self-service users may move, how and when (see
    :class:`vmferry.model.project_policy.ProjectPolicy`): strategies and weekly windows as
    written (``Sat 22:00-Sun 04:00``), in the time zone ``tz``."""

    __tablename__ = "project_policies"

    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    strategies: Mapped[list[str]] = mapped_column(JSON)
    windows: Mapped[list[str]] = mapped_column(JSON)
    tz: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConsoleSessionRow(Base):
    """A session of the web console (:mod:`vmferry.store.console_sessions`): the SHA-256 of
    the cookie's random value (the value itself is never stored), its user, the CSRF token
    of its forms, and when it ends."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_user", "user"),)

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VsphereSourceRow(Base):
    """A vCenter or ESXi registered as a source (see
    :class:`vmferry.model.vsphere.VsphereSource`): where it is, who logs in, which
    certificate to trust. Never the password."""

    __tablename__ = "vsphere_sources"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(Text)
    port: Mapped[int] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(Text)
    datacenter: Mapped[str | None] = mapped_column(Text)
    ca_file: Mapped[str | None] = mapped_column(Text)
    insecure: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HostMaintenanceRow(Base):
    """A host in maintenance (see :class:`vmferry.model.maintenance.HostMaintenance`); no row:
    in service."""

    __tablename__ = "host_maintenance"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)


class DiskBackupRow(Base):
    """A disk backup taken before a move (see :class:`vmferry.model.backup.DiskBackup`)."""

    __tablename__ = "disk_backups"
    __table_args__ = (Index("ix_disk_backups_job_id", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32))
    vm: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pool: Mapped[str] = mapped_column(String(255))
    target: Mapped[str] = mapped_column(String(64))
    volume: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(32))
    capacity_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class HaVmRow(Base):
    """An HA-enabled VM (see :class:`vmferry.model.ha.HaVm`)."""

    __tablename__ = "ha_vms"

    vm: Mapped[str] = mapped_column(String(255), primary_key=True)
    priority: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    definition_xml: Mapped[str] = mapped_column(Text)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HostPowerRow(Base):
    """A host's power driver (see :class:`vmferry.model.ha.HostPower`)."""

    __tablename__ = "host_power"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    on_command: Mapped[str] = mapped_column(Text)
    off_command: Mapped[str] = mapped_column(Text)
    status_command: Mapped[str] = mapped_column(Text)
    timeout_s: Mapped[float] = mapped_column(Float)
    driver: Mapped[str] = mapped_column(String(16), server_default="command")
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    user: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_env: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ca: Mapped[str | None] = mapped_column(Text, nullable=True)
    insecure: Mapped[bool] = mapped_column(Boolean, server_default=false())
    automation: Mapped[str] = mapped_column(String(16), server_default="automatic")
