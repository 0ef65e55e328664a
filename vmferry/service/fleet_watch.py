"""The fleet loops of `vmferry watch`: continuous balancing (``--balance``) and power
management (``--power``), beside the HA monitor (docs/operations.md).

The data flow of one round (:meth:`FleetWatch.round`):

1. **measure**: every registered host that answers and is not in standby is read through
   libvirt (its capacity, and the cumulative counters of its running VMs); against the
   previous round's counters each VM gets a profile sample, stored like `vmferry profile`'s
   (:mod:`vmferry.drivers.libvirt_stats`), and each host a demand sample (the cores its VMs
   used, :class:`~vmferry.fleetops.power.DemandSample`), kept in memory for the windows;
2. **power** (``--power``): :func:`~vmferry.fleetops.power.power_decision` over the demand
   windows either wakes standby hosts (:func:`vmferry.service.consolidate.wake`), or lets
   consolidation run, which frees what it can and powers it off
   (:func:`vmferry.service.consolidate.apply`). After either action the windows start
   again, so the next decision reads only what followed it;
3. **balance** (``--balance``): the imbalance of the loads from the samples this watch
   took (over the last ``window_s``) goes to :func:`~vmferry.fleetops.continuous.balance_turn`
   (hysteresis, persistence, cool-downs); when it acts, the recommender's moves run as the
   plan ``balance`` (:func:`vmferry.service.balance.apply`), leaving the VMs it moved within
   the VM cool-down where they are.

What this remembers lives in the process: a watch restarted starts its windows and
persistence counts afresh (it waits before it acts again; it never acts sooner).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_stats import DomainCounters, rates, read_counters
from vmferry.errors import BadInputError, HostUnreachableError, VmferryError
from vmferry.fleetops.continuous import (
    BalanceMemory,
    BalancePolicy,
    balance_turn,
    note_moves,
    pinned,
)
from vmferry.fleetops.imbalance import check_metric, imbalance
from vmferry.fleetops.power import (
    DPM_BAND,
    OFF_WINDOW_S,
    ON_WINDOW_S,
    DemandSample,
    DpmBand,
    PowerHost,
    power_decision,
)
from vmferry.model.ha import power_refusal
from vmferry.model.maintenance import MaintenanceState
from vmferry.model.workload import ProfileSample
from vmferry.service import balance as balancing
from vmferry.service import consolidate as consolidation
from vmferry.service.plan_run import PlanEvent
from vmferry.store import ha as ha_store
from vmferry.store import maintenance
from vmferry.store.db import Store

__all__ = ["FleetWatch", "PowerPolicy", "WatchPolicy"]

BALANCE_WINDOW_S = 300.0  # the balancer reads the samples of the last five minutes


@dataclass(frozen=True)
class PowerPolicy:
    band: DpmBand = DPM_BAND
    on_window_s: float = ON_WINDOW_S
    off_window_s: float = OFF_WINDOW_S
    headroom: float = 0.2  # consolidation's capacity headroom

    def __post_init__(self) -> None:
        if not 0 < self.on_window_s <= self.off_window_s:
            raise BadInputError(
                f"windows must be 0 < power-on <= power-off (got {self.on_window_s:g} s, "
                f"{self.off_window_s:g} s)"
            )


@dataclass(frozen=True)
class WatchPolicy:
    """What `vmferry watch` does beyond HA: ``balance`` and ``power`` None to leave them out."""

    balance: BalancePolicy | None = None
    power: PowerPolicy | None = None
    metric: str = "both"
    max_moves: int | None = None
    headroom: float = 0.2
    window_s: float = BALANCE_WINDOW_S

    def __post_init__(self) -> None:
        check_metric(self.metric)
        if self.max_moves is not None and self.max_moves < 1:
            raise BadInputError(f"--max-moves must be >= 1 (got {self.max_moves})")
        if self.window_s <= 0:
            raise BadInputError(f"the balancing window must be > 0 s (got {self.window_s:g})")


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _quiet(_event: PlanEvent) -> None:
    return None


@dataclass
class FleetWatch:
    """The fleet loops' memory between rounds; :meth:`round` runs one."""

    policy: WatchPolicy
    store: Store
    clock: Callable[[], float] = time.monotonic
    on_event: Callable[[PlanEvent], None] = _quiet
    timeout_s: float = 10.0
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    _counters: dict[str, dict[str, DomainCounters]] = field(default_factory=dict)
    _capacity: dict[str, float] = field(default_factory=dict)
    _demand: deque[DemandSample] = field(default_factory=deque)
    _balance: BalanceMemory = field(default_factory=BalanceMemory)

    @property
    def active(self) -> bool:
        return self.policy.balance is not None or self.policy.power is not None

    def round(self) -> list[str]:
        """One round: measure, then power, then balance; what it did or decided, a line each."""
        if not self.active:
            return []
        now = self.clock()
        standby = {h for h, m in maintenance.states(self.store).items()
                   if m.state is MaintenanceState.STANDBY}  # fmt: skip
        self._measure(now, standby)
        lines: list[str] = []
        if self.policy.power is not None:
            lines += self._power(self.policy.power, now, standby)
        if self.policy.balance is not None:
            lines += self._balance_round(self.policy.balance, now)
        return lines

    # -- measure ----------------------------------------------------------------------------

    def _measure(self, now: float, standby: set[str]) -> None:
        taken_at = _iso(datetime.now(UTC))
        for host in self.store.list_hosts():
            if host.name in standby:
                self._counters.pop(host.name, None)
                continue
            try:
                with LibvirtHost.connect(host.name, host.uri, timeout_s=self.timeout_s) as conn:
                    self._capacity[host.name] = float(conn.info().cpus)
                    current = read_counters(conn, None, now)
            except (HostUnreachableError, VmferryError):
                self._counters.pop(host.name, None)  # the next answer starts afresh
                continue
            before = self._counters.get(host.name)
            self._counters[host.name] = current
            if before is None:
                continue
            batch = []
            for vm, after in current.items():
                if vm in before and after.at_s > before[vm].at_s:
                    batch.append(ProfileSample(vm, host.name, taken_at, rates(before[vm], after)))
            self.store.add_profile_samples(batch)
            cores = sum(float(s.metrics["cpu_share"]) * int(s.metrics["vcpus"]) for s in batch)
            self._demand.append(DemandSample(now, host.name, cores))
        keep = max((p.off_window_s for p in [self.policy.power] if p is not None),
                   default=self.policy.window_s)  # fmt: skip
        while self._demand and self._demand[0].at < now - keep:
            self._demand.popleft()

    # -- power ------------------------------------------------------------------------------

    def _power(self, policy: PowerPolicy, now: float, standby: set[str]) -> list[str]:
        known = [c for h, c in self._capacity.items() if h not in standby]
        fallback = sum(known) / len(known) if known else 1.0
        hosts = [PowerHost(h.name, self._capacity.get(h.name, fallback), h.name in standby)
                 for h in self.store.list_hosts()
                 if h.name not in standby or self._may_wake(h.name)]  # fmt: skip
        decision = power_decision(hosts, list(self._demand), now=now, band=policy.band,
                                  on_window_s=policy.on_window_s,
                                  off_window_s=policy.off_window_s)  # fmt: skip
        lines = [f"power: {decision.why}"]
        if decision.wake:
            for name in decision.wake:
                try:
                    woke = consolidation.wake(name, store=self.store, automatic=True)
                    lines.append(f"power: {woke}")
                except VmferryError as exc:
                    lines.append(f"power: {name} not woken: {exc.message}")
            self._demand.clear()
        elif decision.may_consolidate:
            lines += self._consolidate(policy)
            self._demand.clear()
        return lines

    def _may_wake(self, host: str) -> bool:
        """Whether this loop may power ``host`` on (its automation level; no driver: yes,
        waking it is then only waiting for its libvirt)."""
        driver = ha_store.get_power(self.store, host)
        return driver is None or power_refusal(host, driver.automation, "on",
                                               automatic=True) is None  # fmt: skip

    def _consolidate(self, policy: PowerPolicy) -> list[str]:
        report = consolidation.consolidate_fleet(metric=self.policy.metric,
                                                 headroom=policy.headroom, band=policy.band,
                                                 power_off=True, automatic=True,
                                                 store=self.store)  # fmt: skip
        if not report.consolidation.hosts_freed:
            return ["power: consolidation frees no host"]
        applied = consolidation.apply(report, power_off=True, on_event=self.on_event,
                                      automatic=True, store=self.store)  # fmt: skip
        lines = [f"power: consolidation plan {applied.plan_id}: {applied.plan_status}"]
        lines += [f"power: {s.host}: {s.why}" for s in applied.standby]
        return lines

    # -- balance ----------------------------------------------------------------------------

    def _balance_round(self, policy: BalancePolicy, now: float) -> list[str]:
        since = _iso(max(self.started, datetime.now(UTC) - timedelta(seconds=self.policy.window_s)))
        loads = balancing.gather_loads(self.store, timeout_s=self.timeout_s, since=since)
        hosts, vms, at_size, _down, _link = loads
        if at_size:
            return [f"balance: waiting for samples of {', '.join(at_size)}"]
        if not hosts:
            return ["balance: no host answered"]
        turn = balance_turn(policy, self._balance, imbalance(hosts, vms, self.policy.metric), now)
        self._balance = turn.memory
        lines = [f"balance: {turn.why}"]
        if not turn.act:
            return lines
        report = balancing.report_for(loads, metric=self.policy.metric,
                                      threshold=policy.threshold,
                                      max_moves=self.policy.max_moves,
                                      headroom=self.policy.headroom,
                                      fixed=pinned(policy, self._balance, now))  # fmt: skip
        rec = report.recommendation
        if not rec.moves:
            self._balance = note_moves(self._balance, (), now)
            return [*lines, f"balance: nothing to move: {rec.stop}"]
        plan_id, status = balancing.apply(report, on_event=self.on_event, store=self.store)
        self._balance = note_moves(self._balance, [m.vm for m in rec.moves], now)
        moved = ", ".join(f"{m.vm} {m.source}->{m.destination}" for m in rec.moves)
        return [*lines, f"balance: plan {plan_id} {status}: {moved}; imbalance "
                f"{rec.imbalance_before:.3f} -> {rec.imbalance_after:.3f} predicted"]  # fmt: skip
