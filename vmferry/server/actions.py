"""What the routers of actions started through the API share (check, predict, profile,
plans, imports, port profiles on hosts, job resume): the service calls the server makes
(:class:`Services`, which the tests replace with fakes as ``create_app(migrate=...)``
replaces the move), a role gate that runs before the body is judged, and
:func:`start_in_thread`, which runs long work in a background thread of the server and
answers once the work says it has started.

The default services are the ones the CLI commands call (``vmferry check``, ``predict``,
``profile``, ``plan create|run``, ``import``, ``job resume``). They open the store
``VMFERRY_DB`` names, as every command does; `vmferry server` serves that same store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from fastapi import Request

from vmferry.errors import AlreadyExistsError
from vmferry.model.migration import Compression, Job
from vmferry.server.auth import CurrentUser, authorize
from vmferry.server.errors import StartTimeout
from vmferry.server.roles import Action

if TYPE_CHECKING:
    from vmferry.model.workload import ProfileSample
    from vmferry.plan import PlanSpec
    from vmferry.predict.strategy import LocalDisks
    from vmferry.service.check import CheckReport
    from vmferry.service.import_vm import ImportOutcome, ImportRequest
    from vmferry.service.netprofile import ApplyReport, CaptureReport
    from vmferry.service.plan import Measured
    from vmferry.service.predict import PredictReport
    from vmferry.service.profile import ProfileRun
    from vmferry.store.db import Store

__all__ = [
    "Running",
    "Services",
    "default_services",
    "is_inside",
    "role_gate",
    "services_of",
    "start_in_thread",
]

T = TypeVar("T")
log = logging.getLogger("vmferry.server")


class CheckFn(Protocol):
    def __call__(
        self, vm: str, to: str, *, copy_storage: bool, to_pool: str | None = None
    ) -> CheckReport: ...


class PredictFn(Protocol):
    def __call__(
        self, vm: str, to: str, *, max_downtime_ms: int, bandwidth_mib_s: int | None,
        store: Store, parallel: int = 0, compression: Compression = Compression.NONE,
    ) -> PredictReport: ...  # fmt: skip


class ProfileFn(Protocol):
    def __call__(
        self, vm: str | None, *, host: str | None, duration_s: float, interval_s: float,
        on_sample: Callable[[ProfileSample], None],
        on_start: Callable[[str, tuple[str, ...]], None] | None, store: Store,
    ) -> list[ProfileRun]: ...  # fmt: skip


class ImportFn(Protocol):
    def __call__(
        self, request: ImportRequest, *, note: Callable[[str], None],
        on_disk_progress: Callable[[int, float], None],
    ) -> ImportOutcome: ...  # fmt: skip


MeasureFn = Callable[["PlanSpec", "Store"], tuple[dict[str, "Measured"], dict[str, str]]]
AssessFn = Callable[[str, str, int, "float | None"], "LocalDisks | None"]
PlanMigrateFn = Callable[..., Any]  # service.migrate.migrate as plan_run calls it
ResumeFn = Callable[[str], Job]  # service.jobs.reconcile_job
ProbeFn = Callable[[str, str], None]  # (name, uri): HostUnreachableError unless it answers
ApplyFn = Callable[[str, str], "ApplyReport"]  # (profile, host): service.netprofile.apply
RemoveFn = Callable[[str, str], list[str]]  # (profile, host): service.netprofile.remove
CaptureFn = Callable[[str], "CaptureReport"]  # (VM): service.netprofile.capture


class Running:
    """What this server runs in its threads now, by kind and key (a VM being profiled, a
    plan being run, an import's VM name): one at a time per key."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def claim(self, kind: str, key: str, busy: str) -> None:
        """Take ``(kind, key)``; :class:`AlreadyExistsError` (409, ``busy``) when taken."""
        with self._lock:
            if (kind, key) in self._keys:
                raise AlreadyExistsError(busy)
            self._keys.add((kind, key))

    def release(self, kind: str, key: str) -> None:
        with self._lock:
            self._keys.discard((kind, key))

    def active(self, kind: str, key: str) -> bool:
        with self._lock:
            return (kind, key) in self._keys


@dataclass(frozen=True)
class Services:
    """The service calls behind the API's actions."""

    check: CheckFn
    predict: PredictFn
    profile: ProfileFn
    plan_measure: MeasureFn
    plan_migrate: PlanMigrateFn
    import_vm: ImportFn
    resume_job: ResumeFn
    probe_host: ProbeFn = field(default=lambda name, uri: _probe(name, uri))  # libvirt answers?
    netprofile_apply: ApplyFn = field(default=lambda name, host: _apply(name, host))
    netprofile_remove: RemoveFn = field(default=lambda name, host: _remove(name, host))
    netprofile_capture: CaptureFn = field(default=lambda vm: _capture(vm))
    # the disks a VM the planner placed must copy there (None: not assessed)
    plan_assess: AssessFn | None = None
    start_wait_s: float = 180  # how long a request waits for long work to start
    running: Running = field(default_factory=Running)


def _check(vm: str, to: str, *, copy_storage: bool, to_pool: str | None = None) -> CheckReport:
    from vmferry.service.check import check_migration

    return check_migration(vm, to, copy_storage=copy_storage, to_pool=to_pool)


def _predict(
    vm: str, to: str, *, max_downtime_ms: int, bandwidth_mib_s: int | None, store: Store,
    parallel: int = 0, compression: Compression = Compression.NONE,
) -> PredictReport:  # fmt: skip
    from vmferry.service.predict import predict_migration

    return predict_migration(vm, to, max_downtime_ms=max_downtime_ms,
                             bandwidth_mib_s=bandwidth_mib_s, store=store, parallel=parallel,
                             compression=compression)  # fmt: skip


def _profile(
    vm: str | None, *, host: str | None, duration_s: float, interval_s: float,
    on_sample: Callable[[ProfileSample], None],
    on_start: Callable[[str, tuple[str, ...]], None] | None, store: Store,
) -> list[ProfileRun]:  # fmt: skip
    from vmferry.service.profile import profile

    return profile(vm, host=host, duration_s=duration_s, interval_s=interval_s,
                   on_sample=on_sample, on_start=on_start, store=store)  # fmt: skip


def _measure(spec: PlanSpec, store: Store) -> tuple[dict[str, Measured], dict[str, str]]:
    from vmferry.service.plan import measure_live

    return measure_live(spec, store)


def _assess(vm: str, destination: str, max_downtime_ms: int,
            write_bytes_s: float | None) -> LocalDisks | None:  # fmt: skip
    from vmferry.service.plan import assess_disks

    return assess_disks(vm, destination, max_downtime_ms, write_bytes_s)


def _plan_migrate(*args: Any, **kwargs: Any) -> Any:
    from vmferry.service.migrate import migrate

    return migrate(*args, **kwargs)


def _import(
    request: ImportRequest, *, note: Callable[[str], None],
    on_disk_progress: Callable[[int, float], None],
) -> ImportOutcome:  # fmt: skip
    from vmferry.service.import_vm import import_vm

    return import_vm(request, note=note, on_disk_progress=on_disk_progress)


def _probe(name: str, uri: str) -> None:
    from vmferry.service.hosts import probe_host

    probe_host(name, uri)


def _apply(name: str, host: str) -> ApplyReport:
    from vmferry.service.netprofile import apply

    return apply(name, host)


def _remove(name: str, host: str) -> list[str]:
    from vmferry.service.netprofile import remove

    return remove(name, host)


def _capture(vm: str) -> CaptureReport:
    from vmferry.service.netprofile import capture

    return capture(vm)


def _resume(job_id: str) -> Job:
    from vmferry.service.jobs import reconcile_job

    return reconcile_job(job_id)


def default_services(start_wait_s: float = 180) -> Services:
    """The services the CLI commands call."""
    return Services(check=_check, predict=_predict, profile=_profile, plan_measure=_measure,
                    plan_migrate=_plan_migrate, import_vm=_import, resume_job=_resume,
                    plan_assess=_assess, start_wait_s=start_wait_s)  # fmt: skip


def services_of(request: Request) -> Services:
    """The server's services (a FastAPI dependency)."""
    services: Services = request.app.state.vmferry_services
    return services


def role_gate(action: Action) -> Callable[..., None]:
    """A dependency refusing (403) a user whose role may not do ``action`` on any VM, before
    the body is judged; the VM itself is judged by :func:`authorize` once the body names
    it. A user bound to a project is let through here as far as its own project's VMs
    would be."""

    def gate(request: Request, user: CurrentUser) -> None:
        own = (f"project:{user.project}",) if user.project else None
        authorize(request, user, action, vm_tags=own)

    return gate


@dataclass
class _Start(Generic[T]):
    ready: threading.Event
    value: T | None = None
    error: BaseException | None = None


def start_in_thread(
    name: str, work: Callable[[Callable[[T], None]], object], wait_s: float, what: str
) -> T:
    """Run ``work(started)`` in a daemon thread; return the value it passes to
    ``started`` as soon as it does, or raise the error it ended with before that
    (:class:`StartTimeout`, 504, when it does neither within ``wait_s``). What ``work``
    raises after it started is its own to record (in its job or plan)."""
    run: _Start[T] = _Start(threading.Event())

    def started(value: T) -> None:
        if run.value is None:
            run.value = value
        run.ready.set()

    def body() -> None:
        try:
            work(started)
        except BaseException as exc:  # handed to the request if nothing started yet
            run.error = exc
            if run.value is not None:
                log.error("%s failed after it started", what, exc_info=exc)
        finally:
            run.ready.set()

    threading.Thread(target=body, name=name, daemon=True).start()
    if not run.ready.wait(wait_s):
        raise StartTimeout(f"{what} is starting but did not say so within {wait_s:g} s")
    if run.value is not None:
        return run.value
    if run.error is not None:
        raise run.error
    raise StartTimeout(f"{what} ended without starting")


def is_inside(path: Path, roots: tuple[Path, ...]) -> bool:
    """Whether ``path``, with its symlinks and ``..`` resolved, lies inside one of
    ``roots`` (resolved too)."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)
