"""`vmferry migrate --strategy auto`: which kind of move fits this VM, and why.

The decision is :func:`vmferry.predict.strategy.choose_strategy` (pure); this module gathers
what it needs from the hosts:

1. the live pre-flight check: a blocker that only a live move has (``migration.*``, such as
   a QEMU that loses a TCG guest's writes during a live move) rules out live and post-copy;
   any other blocker rules out every move, and the move then goes ahead as live only to be
   refused and recorded by the normal path;
2. when live is ruled out, the warm check (warm needs the disks shared);
3. the prediction (the VM measured for about a second: dirty rate, zero pages) against the
   user's maximum downtime.

A VM that is shut off moves cold (it stays off; nothing to weigh).

A VM whose disks only its host sees (live pre-flight says ``storage.not-shared`` and the user
did not ask for ``--copy-storage``) is chosen for by
:func:`vmferry.predict.strategy.choose_with_disks`: live with ``--copy-storage`` (checked as
such), warm-incremental (its own pre-flight: qcow2 disks) or cold, with the disks'
allocation and the guest's disk write rate (libvirt's block statistics over a second).
"""

from __future__ import annotations

import time
from dataclasses import replace

from vmferry.assess.stream_features import choose_stream
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_stats import rates, read_counters
from vmferry.engine.live import NoteFn
from vmferry.errors import BadInputError, VmferryError
from vmferry.model import VmState
from vmferry.model.migration import Compression, MigrationOptions, Strategy
from vmferry.predict.incremental import DiskLoad
from vmferry.predict.strategy import (
    LocalDisks,
    MoveStrategy,
    StrategyChoice,
    choose_strategy,
    choose_with_disks,
)
from vmferry.service.check import CheckReport, check_migration
from vmferry.service.locate import locate
from vmferry.service.offline_move import LIVE_ONLY, check_offline, copies_for
from vmferry.service.predict import predict_migration
from vmferry.service.rehearse import rehearsed_boots
from vmferry.store.db import open_store


def _quiet(*_args: object) -> None:
    return None


def choose_move(
    vm: str, to: str, options: MigrationOptions, note: NoteFn = _quiet
) -> StrategyChoice:
    """The strategy for moving ``vm`` to ``to`` within ``options.max_downtime_ms``."""
    note(f"choosing how to move {vm}: pre-flight and a one-second measurement")
    live = check_migration(vm, to, copy_storage=options.copy_storage, tls=options.tls,
                           parallel=options.parallel, compression=options.compression,
                           to_pool=options.to_pool)  # fmt: skip
    blockers = live.blocker_ids
    if live.facts is not None and live.facts.vm.state is VmState.SHUT_OFF:
        return StrategyChoice(
            MoveStrategy.COLD,
            f"{vm} is shut off: a cold move copies what only its host sees and defines it on "
            f"{to}, where it stays off (nothing runs, so nothing stops)",
            0,
        )
    if (not options.copy_storage and NOT_SHARED in blockers
            and all(b == NOT_SHARED or b.startswith(LIVE_ONLY) for b in blockers)):  # fmt: skip
        return _choose_copying(vm, to, options, note)
    if blockers and not all(b.startswith(LIVE_ONLY) for b in blockers):
        return StrategyChoice(
            MoveStrategy.LIVE,
            "pre-flight blocks any move (" + ", ".join(blockers) + "): nothing to choose",
            0,
        )
    live_refused = ", ".join(blockers) or None
    warm_refused = _warm_refused(vm, to, options) if live_refused is not None else None
    try:
        report = predict_migration(
            vm, to, max_downtime_ms=options.max_downtime_ms, bandwidth_mib_s=options.bandwidth_mib_s
        )
    except VmferryError as exc:
        if live_refused is not None:
            raise
        return StrategyChoice(
            MoveStrategy.LIVE,
            f"the VM could not be measured ({exc.message}): live, with vmferry's escalations",
            0,
        )
    boot_ms = rehearsed_boots(open_store()).get(vm)  # its last rehearsal's boot, if any
    choice = choose_strategy(report.prediction, options.max_downtime_ms, allow_postcopy=True,
                             live_refused=live_refused, warm_refused=warm_refused,
                             boot_ms=boot_ms)  # fmt: skip
    if choice.strategy is MoveStrategy.WARM and live_refused is None:
        warm_refused = _warm_refused(vm, to, options)  # checked only when it is the choice
        if warm_refused is not None:
            choice = choose_strategy(report.prediction, options.max_downtime_ms,
                                     allow_postcopy=True, warm_refused=warm_refused,
                                     boot_ms=boot_ms)  # fmt: skip
    inputs = report.prediction.inputs
    return _with_stream(choice, live, options, inputs.dirty_rate_bytes_s / inputs.link_bytes_s)


NOT_SHARED = "storage.not-shared"  # the live pre-flight's word for disks only the source sees


def _choose_copying(vm: str, to: str, options: MigrationOptions, note: NoteFn) -> StrategyChoice:
    """The choice for a VM whose disks every move copies (see the module's docstring)."""
    note(f"{vm}'s disks are on its host only: weighing --copy-storage, warm-incremental, cold")
    disks = _copied_disks(vm, to, options, None)
    if isinstance(disks, str):
        return StrategyChoice(MoveStrategy.LIVE, disks, 0)
    report = predict_migration(vm, to, max_downtime_ms=options.max_downtime_ms,
                               bandwidth_mib_s=options.bandwidth_mib_s)  # fmt: skip
    boot_ms = rehearsed_boots(open_store()).get(vm)
    # a live choice keeps the single stream with its disks: multifd beside a disk mirror is
    # not what the lab has proven
    return choose_with_disks(report.prediction, disks, options.max_downtime_ms,
                             boot_ms=boot_ms)  # fmt: skip


def disks_to_copy(vm: str, to: str, options: MigrationOptions,
                  write_bytes_s: float | None = None) -> LocalDisks | None:  # fmt: skip
    """``vm``'s disks that only its host sees when it moves to ``to`` (what every move
    copies), or None when it has none, or when pre-flight blocks every move (the move is
    then refused and recorded as any other). ``write_bytes_s``: the guest's disk write rate
    when already measured (else measured here for a second). For plans
    (:mod:`vmferry.service.plan`)."""
    live = check_migration(vm, to, copy_storage=False, tls=options.tls)
    blockers = live.blocker_ids
    if NOT_SHARED not in blockers or not all(
        b == NOT_SHARED or b.startswith(LIVE_ONLY) for b in blockers
    ):
        return None
    disks = _copied_disks(vm, to, options, write_bytes_s)
    return None if isinstance(disks, str) else disks


def _copied_disks(vm: str, to: str, options: MigrationOptions,
                  write_bytes_s: float | None) -> LocalDisks | str:  # fmt: skip
    """The disks a move of ``vm`` to ``to`` copies, with why live (``--copy-storage``) or
    warm-incremental refuse them; or the words for a move nothing can make."""
    copying = check_migration(vm, to, copy_storage=True, tls=options.tls,
                              parallel=options.parallel, compression=options.compression,
                              to_pool=options.to_pool)  # fmt: skip
    offline = check_offline(vm, to, replace(options, strategy=Strategy.WARM_INCREMENTAL))
    if offline.blocked or offline.facts is None:
        return (
            "pre-flight blocks any move (" + ", ".join(offline.blocker_ids) + "): nothing to choose"
        )
    facts = offline.facts
    incremental_refused = None
    try:
        copies = copies_for(facts, qcow2=True)
    except BadInputError as exc:
        incremental_refused = exc.message
        copies = copies_for(facts)  # a disk with no format or pool: refused by the move
    sizes = {d.target: d.allocation_bytes or d.capacity_bytes or 0 for d in facts.vm.spec.disks}
    rate = disk_write_rate(vm) if write_bytes_s is None else write_bytes_s
    load = DiskLoad(sum(sizes.get(c.target, 0) for c in copies), rate)
    return LocalDisks(load, ", ".join(copying.blocker_ids) or None, incremental_refused)


def disk_write_rate(vm: str, seconds: float = 1.0) -> float:
    """The bytes/s the guest of running ``vm`` writes to its disks now (libvirt's block
    statistics, two readings ``seconds`` apart)."""
    found = locate(vm)
    with LibvirtHost.connect(found.host.name, found.host.uri) as conn:
        before = read_counters(conn, [vm], time.monotonic()).get(vm)
        time.sleep(seconds)
        after = read_counters(conn, [vm], time.monotonic()).get(vm)
    if before is None or after is None:
        raise VmferryError(f"libvirt gave no block statistics for {vm} on {found.host.name}")
    return float(rates(before, after)["disk_write_bytes_s"] or 0.0)


def _with_stream(choice: StrategyChoice, live: CheckReport, options: MigrationOptions,
                 dirty_share: float) -> StrategyChoice:  # fmt: skip
    """A live choice gets the stream :func:`choose_stream` picks, unless the user named one."""
    asked = options.parallel > 0 or options.compression is not Compression.NONE
    if choice.strategy is not MoveStrategy.LIVE or asked or live.facts is None:
        return choice
    stream = choose_stream(live.facts.source, live.facts.destination, precopy_only=True,
                           dirty_share=dirty_share)  # fmt: skip
    return replace(choice, reason=f"{choice.reason}; stream: {stream.why}",
                   parallel=stream.parallel, compression=stream.compression.value)  # fmt: skip


def _warm_refused(vm: str, to: str, options: MigrationOptions) -> str | None:
    """Why the hosts cannot move ``vm`` warm (its pre-flight blockers), or None."""
    if options.copy_storage:
        return "--copy-storage: a warm move does not copy disks"
    report = check_offline(vm, to, replace(options, strategy=Strategy.WARM))
    return ", ".join(report.blocker_ids) or None
