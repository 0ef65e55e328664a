"""`vmferry ha enable|disable|status`, `vmferry host power`, and the HA monitor `vmferry
watch` (docs/operations.md).

Each round of the monitor (:func:`watch_round`):

1. Every registered host is asked through libvirt; an HA VM seen running has its host and
   definition refreshed in the store. An HA VM defined but stopped on a host while it runs
   on another (its old host came back after a restart elsewhere) is undefined there, so
   nothing ever starts it twice.
2. A host whose libvirt does not answer is judged with its heartbeat
   (:func:`vmferry.fleetops.ha.host_verdict`): ``libvirt-down`` (the host answers) is an
   alert only; ``suspect`` hosts with HA VMs that run nowhere else are **fenced**: powered
   off through their power driver and confirmed off (:func:`vmferry.fleetops.ha.fence_outcome`)
   and only then are those VMs placed (by priority, capacity and anti-affinity:
   :func:`vmferry.fleetops.maintenance.evacuate`) and started on other hosts from their
   recorded definitions, each as an ``ha-restart`` job. Not fenced: nothing is restarted,
   the VMs' notes say why.

The store is the monitor's memory: a monitor restarted mid-recovery finds each restarted VM
running (step 1) and restarts no VM twice; one unfinished job per VM keeps two monitors
from restarting one VM at the same time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.power_command import power_off, power_on, power_status
from vmferry.errors import (
    AlreadyExistsError,
    BadInputError,
    BlockedError,
    HostUnreachableError,
    NotFoundError,
    ToolError,
    VmferryError,
)
from vmferry.fleetops.ha import FenceOutcome, HostVerdict, fence_outcome, host_verdict
from vmferry.fleetops.loads import anti_affinity_group
from vmferry.fleetops.maintenance import evacuate
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.model import Host, VmState
from vmferry.model.ha import (
    HaPriority,
    HaVm,
    HostPower,
    PowerAutomation,
    power_problem,
    power_refusal,
)
from vmferry.model.hook import HookPhase
from vmferry.model.maintenance import MaintenanceState
from vmferry.model.migration import Job, JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.service import audit
from vmferry.service.balance import gather_loads
from vmferry.service.hooks import after_failure, hooks_for, run_phase
from vmferry.service.job_repair import finish_reconciled
from vmferry.service.jobs import owner_alive, owner_of_job
from vmferry.service.lease import process_lease
from vmferry.service.locate import locate
from vmferry.service.netprofile import host_exec
from vmferry.store import accounts, maintenance
from vmferry.store import ha as ha_store
from vmferry.store.db import Store, open_store

__all__ = [
    "HaStatus",
    "disable",
    "enable",
    "power",
    "set_automation",
    "set_power",
    "status",
    "watch_round",
]

NoteFn = Callable[[str], None]
CONFIRM_S = 30.0  # how long a power-off may take to show as off


def _quiet(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class HaStatus:
    """`vmferry ha status --json`: one per HA VM."""

    vm: str
    enabled: bool
    host: str
    state: str
    priority: str
    note: str | None


def enable(vm: str, priority: HaPriority = HaPriority.MEDIUM, *,
           store: Store | None = None) -> HaVm:  # fmt: skip
    """Protect running ``vm``: record where it runs and its definition."""
    store = store or open_store()
    found = locate(vm)
    if found.record.state is not VmState.RUNNING:
        raise BadInputError(f"{vm} is {found.record.state} on {found.host.name}; HA protects "
                            "a running VM")  # fmt: skip
    with LibvirtHost.connect(found.host.name, found.host.uri) as conn:
        xml = conn.definition_xml(vm)
    spec = found.record.spec
    record = HaVm(vm, priority, found.host.name, xml, spec.vcpus, spec.memory_bytes)
    ha_store.put_ha_vm(store, record)
    return record


def disable(vm: str, *, store: Store | None = None) -> None:
    if not ha_store.remove_ha_vm(store or open_store(), vm):
        raise NotFoundError(f"{vm} is not HA-enabled; `vmferry ha status` lists those that are")


def status(*, store: Store | None = None) -> list[HaStatus]:
    return [HaStatus(v.vm, True, v.host, v.state, v.priority.value, v.note)
            for v in ha_store.ha_vms(store or open_store())]  # fmt: skip


def set_power(power_record: HostPower, *, store: Store | None = None) -> None:
    """Record a host's power driver; ``BadInputError`` (one line, nothing written) for one
    that cannot work (:func:`vmferry.model.ha.power_problem`). A host's automation level
    is kept when its driver is recorded again."""
    why = power_problem(power_record)
    if why is None and power_record.ca and not Path(power_record.ca).is_file():
        why = f"--ca {power_record.ca}: no such file"
    if why is not None:
        raise BadInputError(why)
    store = store or open_store()
    store.get_host(power_record.host)  # NotFoundError for a host vmferry does not know
    before = ha_store.get_power(store, power_record.host)
    if before is not None:
        power_record = replace(power_record, automation=before.automation)
    ha_store.set_power(store, power_record)


def _driver(store: Store, host: str) -> HostPower:
    driver = ha_store.get_power(store, host)
    if driver is None:
        raise NotFoundError(f"{host} has no power driver; `vmferry host power set {host} "
                            "--on CMD --off CMD --status CMD`")  # fmt: skip
    return driver


def set_automation(host: str, level: str, *, store: Store | None = None) -> HostPower:
    """Set who may power ``host`` on or off through its driver (:class:`PowerAutomation`)."""
    try:
        automation = PowerAutomation(level)
    except ValueError:
        raise BadInputError(f"power automation must be automatic, manual or disabled, not "
                            f"{level!r}") from None  # fmt: skip
    store = store or open_store()
    driver = replace(_driver(store, host), automation=automation)
    ha_store.set_power(store, driver)
    return driver


def power(host: str, action: str, *, store: Store | None = None, automatic: bool = False,
          by: str = "host power") -> str:  # fmt: skip
    """``status``, ``on`` or ``off`` through the host's power driver; its state after.
    ``automatic``: asked by one of vmferry's loops (``by`` names what asked, for the audit
    trail), which the host's automation level may refuse (:class:`BlockedError`, exit 3,
    nothing powered). Every ``on`` and ``off`` is recorded in the audit trail, done, failed
    or refused."""
    store = store or open_store()
    driver = _driver(store, host)
    if action not in ("on", "off", "status"):
        raise BadInputError(f"power action must be on, off or status, not {action!r}")
    if action == "status":
        return power_status(driver)
    detail: dict[str, object] = {"by": by, "automatic": automatic,
                                 "automation": driver.automation.value}  # fmt: skip
    refused = power_refusal(host, driver.automation, action, automatic=automatic)
    if refused is not None:
        _audit(store, host, action, "refused", {**detail, "why": refused})
        raise BlockedError(refused)
    try:
        (power_off if action == "off" else power_on)(driver)
        state = power_status(driver)
    except VmferryError as exc:
        _audit(store, host, action, "error", {**detail, "why": exc.message})
        raise
    _audit(store, host, action, "ok", {**detail, "state_after": state})
    return state


def _audit(store: Store, host: str, action: str, result: str, detail: dict[str, object]) -> None:
    audit.record(store, user=audit.local_user(), remote="local", action=f"host.power.{action}",
                 target=host, result=result, detail=detail)  # fmt: skip


# -- the monitor --------------------------------------------------------------------------


@dataclass
class _Seen:
    running: dict[str, str]  # VM -> the reachable host it runs on
    stopped: dict[str, list[str]]  # VM -> reachable hosts where it is defined, not running
    down: dict[str, str]  # host -> why libvirt did not answer


def watch_round(*, store: Store | None = None, note: NoteFn = _quiet,
                timeout_s: float = 10.0, confirm_s: float = CONFIRM_S) -> list[str]:  # fmt: skip
    """One round of the monitor (see the module docstring); what it did, a line each."""
    store = store or open_store()
    protected = {v.vm: v for v in ha_store.ha_vms(store)}
    hosts = {h.name: h for h in store.list_hosts()}
    seen = _look(store, hosts, protected, timeout_s)
    done: list[str] = []

    def say(line: str) -> None:
        done.append(line)
        note(line)

    for job in store.unfinished_jobs():  # a monitor that stopped mid-restart: its jobs end
        if job.kind == "ha-restart" and not owner_alive(store, job):
            say(_settle_restart(store, job, seen.running.get(job.vm)))

    for vm, where in seen.stopped.items():  # a host back after its VMs were restarted
        if vm in protected and vm in seen.running:
            for name in where:
                with LibvirtHost.connect(name, hosts[name].uri) as conn:
                    conn.undefine(vm)
                say(f"{vm}: its stale definition on {name} removed (it runs on "
                    f"{seen.running[vm]})")  # fmt: skip
    standby = {h for h, m in maintenance.states(store).items()
               if m.state is MaintenanceState.STANDBY}  # fmt: skip
    for name, why in seen.down.items():
        if name in standby:  # powered off on purpose (`vmferry consolidate --apply`)
            continue
        victims = [v for v in protected.values() if v.host == name and v.vm not in seen.running]
        verdict = host_verdict(False, _heartbeat(hosts[name]))
        if verdict is HostVerdict.LIBVIRT_DOWN:
            _note_all(store, victims, f"{name}'s libvirt does not answer but the host does: "
                      "not fenced, nothing restarted")  # fmt: skip
            say(f"{name}: libvirt down ({why}), the host answers: alert only")
            continue
        if not victims:
            say(f"{name}: does not answer ({why}); no HA VM to restart")
            continue
        outcome = _fence(store, name, confirm_s)
        if outcome is not FenceOutcome.FENCED:
            _note_all(store, victims, f"{name} could not be fenced ({outcome}): nothing "
                      "restarted, it may still run the VM")  # fmt: skip
            say(f"{name}: not fenced ({outcome}); nothing restarted")
            continue
        say(f"{name}: fenced (powered off and confirmed off)")
        for line in _restart(store, hosts, name, victims, timeout_s):
            say(line)
    return done


def _look(store: Store, hosts: dict[str, Host], protected: dict[str, HaVm],
          timeout_s: float) -> _Seen:  # fmt: skip
    seen = _Seen({}, {}, {})
    for host in hosts.values():
        try:
            with LibvirtHost.connect(host.name, host.uri, timeout_s=timeout_s) as conn:
                for record in conn.list_vms():
                    vm = record.spec.name
                    if record.state is VmState.RUNNING:
                        seen.running[vm] = host.name
                        known = protected.get(vm)
                        if known is not None and known.host != host.name:
                            ha_store.put_ha_vm(store, replace(
                                known, host=host.name, definition_xml=conn.definition_xml(vm),
                                state="protected", note=None))  # fmt: skip
                    else:
                        seen.stopped.setdefault(vm, []).append(host.name)
        except HostUnreachableError as exc:
            seen.down[host.name] = exc.message
    return seen


def _heartbeat(host: Host) -> bool | None:
    """The host's heartbeat: a command through its shell answers (None: no shell)."""
    hexec = host_exec(host)
    if hexec is None:
        return None
    try:
        hexec.run(["true"], timeout_s=5)
        return True
    except (HostUnreachableError, ToolError):
        return False


def _fence(store: Store, host: str, confirm_s: float) -> FenceOutcome:
    driver = ha_store.get_power(store, host)
    if driver is None:
        return fence_outcome(False, False, None)
    detail: dict[str, object] = {"by": "ha fencing", "automatic": True,
                                 "automation": driver.automation.value}  # fmt: skip
    refused = power_refusal(host, driver.automation, "off", automatic=True)
    if refused is not None:
        state = _status_or_none(driver)
        outcome = fence_outcome(True, False, state, refused=True)
        if outcome is not FenceOutcome.FENCED:
            _audit(store, host, "off", "refused", {**detail, "why": refused})
        return outcome
    try:
        power_off(driver)
    except ToolError as exc:
        _audit(store, host, "off", "error", {**detail, "why": exc.message})
        return fence_outcome(True, False, None)
    deadline = time.monotonic() + confirm_s
    while True:
        state = _status_or_none(driver)
        if state == "off" or time.monotonic() > deadline:
            outcome = fence_outcome(True, True, state)
            _audit(store, host, "off", "ok" if outcome is FenceOutcome.FENCED else "error",
                   {**detail, "state_after": state, "fence": outcome.value})  # fmt: skip
            return outcome
        time.sleep(1.0)


def _status_or_none(driver: HostPower) -> str | None:
    try:
        return power_status(driver)
    except ToolError:
        return None


def _restart(store: Store, hosts: dict[str, Host], dead: str, victims: list[HaVm],
             timeout_s: float) -> list[str]:  # fmt: skip
    """Place ``victims`` on the hosts that answer and start them there, by priority."""
    loads, running, _at_size, _down, link = gather_loads(store, timeout_s=timeout_s)
    loads.append(HostLoad(dead, 1, 1, ""))  # out of the fleet: evacuate marks it
    lost = [VmLoad(v.vm, dead, v.vcpus, v.memory_bytes, float(v.vcpus), v.memory_bytes,
                   anti_affinity=anti_affinity_group(accounts.tags_of(store, v.vm)))
            for v in victims]  # fmt: skip
    by_name = {v.vm: v for v in victims}
    placed = evacuate(loads, [*running, *lost], dead, link_bytes_s=link,
                      first=lambda vm: by_name[vm.name].priority.rank)  # fmt: skip
    lines = [f"{line}: not restarted" for line in placed.stuck]
    for line in placed.stuck:
        vm = line.split(":", 1)[0]
        ha_store.put_ha_vm(store, replace(by_name[vm], state="failed", note=line))
    for move in placed.moves:
        lines.append(_start_on(store, hosts[move.destination], dead, by_name[move.vm]))
    return lines


def _settle_restart(store: Store, job: Job, running_on: str | None) -> str:
    """End the ``ha-restart`` job of a monitor that stopped: completed when its VM runs on
    the job's destination, failed otherwise (this round restarts it if it runs nowhere)."""
    who = owner_of_job(store, job).why
    vm, there = job.vm, job.destination
    if running_on == there:
        why = f"its monitor stopped ({who}); {vm} runs on {there}"
        finish_reconciled(store, job, JobStatus.COMPLETED, why)
        return f"{vm}: restart job {job.id} of a stopped monitor completed (it runs on {there})"
    why = f"its monitor stopped before {vm} ran on {there} ({who})"
    finish_reconciled(store, job, JobStatus.FAILED, why)
    return f"{vm}: restart job {job.id} of a stopped monitor ended failed ({who})"


def reconcile_restart(store: Store, job: Job) -> Job:
    """`vmferry job resume` of an ``ha-restart`` job whose monitor died: its end recorded from
    where the VM runs (its destination asked through libvirt)."""
    host = store.get_host(job.destination)
    running_on = None
    try:
        with LibvirtHost.connect(host.name, host.uri) as conn:
            if job.vm in conn.running_vm_names():
                running_on = host.name
    except HostUnreachableError as exc:
        store.add_event(job.id, "note", f"resuming: {host.name} does not answer, so whether "
                        f"{job.vm} runs there cannot be told yet: {exc.message}")  # fmt: skip
        return store.get_job(job.id)
    _settle_restart(store, job, running_on)
    return store.get_job(job.id)


def _start_on(store: Store, target: Host, dead: str, vm: HaVm) -> str:
    try:
        job = store.create_job("ha-restart", vm.vm, dead, target.name, MigrationOptions())
    except AlreadyExistsError as exc:  # another monitor is restarting it
        return f"{vm.vm}: left alone: {exc.message}"
    store.set_owner(job.id, process_lease(store))
    store.set_status(job.id, JobStatus.RUNNING)
    store.add_event(job.id, "fence", f"{dead} fenced: powered off and confirmed off", {})
    started = time.monotonic()
    try:
        with LibvirtHost.connect(target.name, target.uri) as conn:
            conn.define_xml(vm.definition_xml)
            conn.start(vm.vm)
        status, reason = JobStatus.COMPLETED, None
        ha_store.put_ha_vm(store, replace(vm, host=target.name, state="restarted",
                                          note=f"restarted on {target.name} after {dead} "
                                          "was fenced"))  # fmt: skip
    except VmferryError as exc:
        status, reason = JobStatus.FAILED, exc.message
        ha_store.put_ha_vm(store, replace(vm, state="failed", note=exc.message))
    hooks, started_ok = hooks_for(store, vm.vm), reason is None
    if started_ok:  # the VM's post-migrate hooks, as after a move, before the verdict
        checked = run_phase(store, job.id, HookPhase.POST_MIGRATE, hooks)
        if not checked.passed:  # the VM runs there all the same: HA does not undo a start
            status, reason = JobStatus.FAILED, "; ".join(checked.problems)
    store.finish(job.id, MigrationResult(job.id, vm.vm, dead, target.name, Strategy.COLD, status,
                                         reason, round((time.monotonic() - started) * 1000),
                                         None, None, None))  # fmt: skip
    after_failure(store, job.id, hooks)
    if started_ok:
        return f"{vm.vm}: restarted on {target.name} (job {job.id})" + (
            f"; job failed: {reason}" if reason else "")  # fmt: skip
    return f"{vm.vm}: restart on {target.name} failed: {reason}"


def _note_all(store: Store, victims: list[HaVm], note: str) -> None:
    for v in victims:
        ha_store.put_ha_vm(store, replace(v, note=note))
