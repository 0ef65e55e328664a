"""Which way to move a VM: live pre-copy, live switching to post-copy, warm or cold (pure).

- ``live``: pre-copy converges and its predicted downtime is within the VM's tolerance;
- ``postcopy``: pre-copy alone would not converge, would converge only with the guest
  throttled, or its downtime would be too long, but post-copy is allowed: the switch is short
  and the rest follows on demand (the policy switches at its first judgment,
  :func:`vmferry.predict.model.with_early_postcopy`); the reason names its risk;
- ``warm``: suspend to a saved state, transfer it, resume: the downtime is the whole
  transfer of the non-zero memory, for VMs that tolerate that but cannot move live;
- ``cold``: shut down, copy, start: for VMs that tolerate an outage, or when nothing else fits;
- ``warm-incremental``: for a VM whose disks only its host sees (every move copies them),
  when it cannot move live with ``--copy-storage``: the disks copied while it runs, a stop
  for the last changes, a boot on the destination (:func:`choose_with_disks`).

The reason is one sentence with the numbers that decided.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from vmferry.model.migration import Compression, MigrationOptions, Strategy
from vmferry.predict.incremental import CUTOVER_MS, DiskLoad, cold_copy_ms, predict_incremental
from vmferry.predict.model import Prediction, policy_would_escalate, with_early_postcopy

MIB = 2**20


class MoveStrategy(enum.StrEnum):
    LIVE = "live"
    POSTCOPY = "postcopy"
    WARM = "warm"
    COLD = "cold"
    WARM_INCREMENTAL = "warm-incremental"


@dataclass(frozen=True)
class StrategyChoice:
    strategy: MoveStrategy
    reason: str
    predicted_downtime_ms: int
    parallel: int = 0  # the stream chosen with it (live only): multifd channels
    compression: str = "none"  # and their compression ("zstd"), as MigrationOptions names it
    copy_storage: bool = False  # live: the disks copied with it (--copy-storage)


@dataclass(frozen=True)
class LocalDisks:
    """The VM's disks only its host sees, which every move copies: how much and how fast
    the guest writes them; why a live move with ``--copy-storage`` cannot be made (its
    pre-flight blockers), and why a warm-incremental one cannot (a disk not qcow2)."""

    load: DiskLoad
    live_refused: str | None = None
    incremental_refused: str | None = None


def _rounds(n: int) -> str:
    return f"{n} round" if n == 1 else f"{n} rounds"


def warm_downtime_ms(prediction: Prediction) -> int:
    """Saving, sending and restoring the non-zero memory while the VM is stopped."""
    inputs, cal = prediction.inputs, prediction.calibration
    rate = inputs.link_bytes_s * max(0.01, cal.efficiency)
    return round(cal.setup_ms + inputs.nonzero_bytes * cal.bytes_factor / rate * 1000)


def move_prediction(prediction: Prediction, strategy: str) -> Prediction:
    """The move ``strategy`` makes, as the model sees it: a live move allowed post-copy
    switches at the policy's first judgment when pre-copy would need escalating
    (:func:`vmferry.engine.convergence.decide`), so its total is the first pass and then
    what the guest dirtied during it, sent once (:func:`with_early_postcopy`); every other
    move keeps the pre-copy prediction."""
    if strategy == MoveStrategy.POSTCOPY and policy_would_escalate(prediction):
        return with_early_postcopy(prediction)
    return prediction


def move_time_ms(prediction: Prediction, strategy: str, stop_ms: int) -> int:
    """How long the move ``strategy`` takes, as the model sees it, without the copy of the
    disks only its host sees (the planner adds that): a live move's is its pre-copy's, or
    the post-copy move's (:func:`move_prediction`); a warm, cold or warm-incremental move
    sends no running guest's memory: it stops the VM, and its time is that stop,
    ``stop_ms`` (the strategy's predicted downtime: saving, sending and restoring the
    non-zero memory, or the last round and the boot)."""
    if Strategy(strategy).offline:
        return stop_ms
    return move_prediction(prediction, strategy).total_time_ms


def choose_strategy(
    prediction: Prediction,
    max_downtime_ms: int | None,
    allow_postcopy: bool = True,
    *,
    allow_offline: bool = True,
    postcopy_downtime_ms: int | None = None,
    live_refused: str | None = None,
    warm_refused: str | None = None,
    boot_ms: int | None = None,
) -> StrategyChoice:
    """Choose for one VM.

    ``max_downtime_ms``: the VM's tolerance (None: any downtime is acceptable, so the
    simplest move that fits wins, still live when it converges). ``allow_postcopy``: the
    VM may run on the destination before all its memory is there (a failure of the source
    or the link then loses it). ``allow_offline``: warm or cold moves are acceptable at all.
    ``postcopy_downtime_ms``: the post-copy switchover (default: the calibrated switchover).
    ``live_refused`` / ``warm_refused``: why the hosts cannot move this VM live (or post-copy)
    / warm at all (pre-flight blockers that only that kind of move has, such as a QEMU that
    loses a TCG guest's writes during a live move): the choice is then among what is left.
    ``boot_ms``: how long the VM took to boot on its destination in its last rehearsal
    (`vmferry rehearse`); a cold move stops it for at least that (else for at least a warm
    move's stop, the model's only figure).
    """
    if live_refused is not None:
        return _offline_choice(prediction, max_downtime_ms, live_refused, warm_refused, boot_ms)
    p = prediction
    inputs = p.inputs
    link = f"{inputs.link_bytes_s / MIB:.1f} MiB/s"
    dirty = f"{inputs.dirty_rate_bytes_s / MIB:.1f} MiB/s"
    mem = f"{inputs.memory_bytes / MIB:.0f} MiB"
    tolerance = "any" if max_downtime_ms is None else f"{max_downtime_ms} ms"
    switch = (
        postcopy_downtime_ms
        if postcopy_downtime_ms is not None
        else round(p.calibration.switchover_ms)
    )
    warm = warm_downtime_ms(p)

    def fits(ms: int) -> bool:
        return max_downtime_ms is None or ms <= max_downtime_ms

    # pre-copy converges, but only with its guest throttled (the policy's limit at its ceiling
    # and the passes after the first still longer than the first): post-copy replaces it
    throttled = p.converges and policy_would_escalate(p)
    if p.converges and fits(p.guest_pause_ms) and not (throttled and allow_postcopy
                                                        and fits(switch)):  # fmt: skip
        slowed = ("; the passes after the first would outlast it, so vmferry's policy will "
                  "throttle the guest" if throttled else "")  # fmt: skip
        return StrategyChoice(
            MoveStrategy.LIVE,
            f"pre-copy converges in {_rounds(len(p.rounds))} ({mem}, dirty {dirty} "
            f"over a {link} link): about {p.total_time_ms / 1000:.1f} s with "
            f"{p.guest_pause_ms} ms downtime, within the tolerance of {tolerance}{slowed}",
            p.guest_pause_ms,
        )
    if not p.converges:
        why_not = f"pre-copy does not converge (dirty {dirty} against a {link} link)"
    elif not fits(p.guest_pause_ms):
        why_not = (f"pre-copy's predicted downtime of {p.guest_pause_ms} ms exceeds the "
                   f"tolerance of {tolerance}")  # fmt: skip
    else:
        why_not = (f"pre-copy converges only with its guest throttled (dirty {dirty} against "
                   f"a {link} link: the passes after the first would take "
                   f"{p.later_passes_s:.1f} s, the "
                   f"first {p.first_pass_s:.1f} s)")  # fmt: skip
    if allow_postcopy and fits(switch):
        early = with_early_postcopy(p)
        return StrategyChoice(
            MoveStrategy.POSTCOPY,
            f"{why_not}; live with post-copy after the first pass switches in about "
            f"{switch} ms and moves the rest on demand (about "
            f"{early.total_time_ms / 1000:.1f} s in all); until it ends, a broken link or a "
            f"failed host loses the VM (--strategy live keeps it on pre-copy, throttled)",
            switch,
        )
    if not allow_offline:
        fallback = MoveStrategy.POSTCOPY if allow_postcopy else MoveStrategy.LIVE
        return StrategyChoice(
            fallback,
            f"{why_not}, and the VM may not be stopped: {fallback} with "
            f"vmferry's escalation (throttling) is the only way left",
            switch if allow_postcopy else p.guest_pause_ms,
        )
    no_postcopy = (
        "post-copy is not allowed"
        if not allow_postcopy
        else (f"post-copy's switch of about {switch} ms exceeds it")
    )
    if fits(warm) and warm_refused is None:
        return StrategyChoice(
            MoveStrategy.WARM,
            f"{why_not} and {no_postcopy}; a warm move (suspend, transfer "
            f"{inputs.nonzero_bytes / MIB:.0f} MiB of state, resume) stops "
            f"the VM for about {warm / 1000:.1f} s, within the tolerance of "
            f"{tolerance}",
            warm,
        )
    no_warm = (
        f"a warm move is refused ({warm_refused})"
        if warm_refused is not None
        else f"even a warm move would stop it for about {warm / 1000:.1f} s, over the "
        f"tolerance of {tolerance}"
    )
    cold, booted = cold_downtime(warm, boot_ms)
    return StrategyChoice(
        MoveStrategy.COLD,
        f"{why_not}, {no_postcopy}, and {no_warm}: move it cold (shut down, copy, start) in "
        f"a maintenance window{booted}",
        cold,
    )


def cold_downtime(warm_ms: int, boot_ms: int | None) -> tuple[int, str]:
    """A cold move's least stop (ms) and, when a rehearsal measured the boot, the words."""
    if boot_ms is None:
        return warm_ms, ""
    return boot_ms, f"; its rehearsal booted it in {boot_ms / 1000:.1f} s, so at least that"


def _offline_choice(
    p: Prediction,
    max_downtime_ms: int | None,
    live_refused: str,
    warm_refused: str | None,
    boot_ms: int | None,
) -> StrategyChoice:
    """Warm when the hosts allow it (it keeps the guest's memory), else cold."""
    tolerance = "any" if max_downtime_ms is None else f"{max_downtime_ms} ms"
    warm = warm_downtime_ms(p)
    if warm_refused is None:
        over = (
            ""
            if max_downtime_ms is None or warm <= max_downtime_ms
            else (f", over the tolerance of {tolerance}, but nothing shorter is possible")
        )
        return StrategyChoice(
            MoveStrategy.WARM,
            f"a live move is refused ({live_refused}); a warm move (suspend, transfer "
            f"{p.inputs.nonzero_bytes / MIB:.0f} MiB of state, resume) keeps the guest's "
            f"memory and stops it for about {warm / 1000:.1f} s{over}",
            warm,
        )
    cold, booted = cold_downtime(warm, boot_ms)
    return StrategyChoice(
        MoveStrategy.COLD,
        f"a live move is refused ({live_refused}) and a warm one too ({warm_refused}): "
        f"move it cold (shut down, copy, start){booted}",
        cold,
    )


def copy_rate(prediction: Prediction) -> float:
    """The bytes/s a copy over the migration link achieves (the calibrated share of it)."""
    return prediction.inputs.link_bytes_s * max(0.01, prediction.calibration.efficiency)


# a disk mirror keeps up while the guest writes at most this share of the copy rate
MIRROR_SHARE = 0.75


def choose_with_disks(prediction: Prediction, disks: LocalDisks, max_downtime_ms: int | None,
                      *, boot_ms: int | None = None) -> StrategyChoice:  # fmt: skip
    """Choose for a VM whose disks are copied whichever way it moves.

    Live with ``--copy-storage`` when the hosts allow it, pre-copy converges within the
    tolerance and the guest writes its disks slowly enough for the mirror to keep up (it
    then never stops beyond pre-copy's switch); else warm-incremental (stopped for the last
    round of changes, then it boots), which stops it for less than a cold move of the same
    disks; cold only when warm-incremental is refused. Post-copy is not offered with copied
    disks: the mirror must be in sync before the switch, and a failure after it loses both."""
    p, load = prediction, disks.load
    rate = copy_rate(p)
    tolerance = "any" if max_downtime_ms is None else f"{max_downtime_ms} ms"
    here = (f"its disks ({load.allocated_bytes / MIB:.0f} MiB, written at "
            f"{load.write_bytes_s / MIB:.1f} MiB/s) are on its host only, so every move copies "
            "them")  # fmt: skip
    keeps_up = load.write_bytes_s <= MIRROR_SHARE * rate
    fits = max_downtime_ms is None or p.guest_pause_ms <= max_downtime_ms
    if disks.live_refused is None and p.converges and fits and keeps_up:
        return StrategyChoice(
            MoveStrategy.LIVE,
            f"{here}: live with --copy-storage copies them while it runs (about "
            f"{load.allocated_bytes / rate:.1f} s), then pre-copy converges in "
            f"{_rounds(len(p.rounds))} with {p.guest_pause_ms} ms downtime, within the tolerance "
            f"of {tolerance}",
            p.guest_pause_ms,
            copy_storage=True,
        )
    if disks.live_refused is not None:
        no_live = f"a live move with --copy-storage is refused ({disks.live_refused})"
    elif not p.converges:
        no_live = (f"pre-copy does not converge (dirty {p.inputs.dirty_rate_bytes_s / MIB:.1f} "
                   f"MiB/s against a {p.inputs.link_bytes_s / MIB:.1f} MiB/s link)")  # fmt: skip
    elif not fits:
        no_live = (f"pre-copy's predicted downtime of {p.guest_pause_ms} ms exceeds the tolerance "
                   f"of {tolerance}")  # fmt: skip
    else:
        no_live = (f"the guest writes its disks faster than a mirror at {rate / MIB:.1f} MiB/s "
                   "keeps up with")  # fmt: skip
    boot, booted = boot_ms or 0, _then_boots(boot_ms)
    cold = cold_copy_ms(load, rate)
    if disks.incremental_refused is None:
        inc = predict_incremental(load, rate, max_downtime_ms or 300)
        return StrategyChoice(
            MoveStrategy.WARM_INCREMENTAL,
            f"{here}; {no_live}; warm-incremental copies them while it runs "
            f"({len(inc.rounds)} rounds, {inc.copied_bytes / MIB:.0f} MiB) and stops it for "
            f"about {inc.stop_ms / 1000:.1f} s for the last {inc.last.copied_bytes / MIB:.1f} "
            f"MiB{booted}; cold would stop it for {cold / 1000:.1f} s before the boot",
            inc.stop_ms + boot,
        )
    return StrategyChoice(
        MoveStrategy.COLD,
        f"{here}; {no_live}, and warm-incremental is refused ({disks.incremental_refused}): "
        f"move it cold (shut down, copy, start), stopped about {cold / 1000:.1f} s{booted}",
        cold + boot,
    )


def _then_boots(boot_ms: int | None) -> str:
    """The words for the boot after a warm-incremental or cold stop."""
    if boot_ms:
        return f", then it boots ({boot_ms / 1000:.1f} s in its rehearsal)"
    return ", then it boots"


def incremental_stop(p: Prediction, load: DiskLoad | None, max_downtime_ms: int,
                     boot_ms: int | None = None) -> tuple[str, int]:  # fmt: skip
    """What a warm-incremental move named by the user stops the VM for: the words and the
    ms (the last round and the cutover, and the rehearsed boot when there is one). Without
    ``load`` (the VM not measured) only the cutover and the boot are known."""
    boot, booted = boot_ms or 0, _then_boots(boot_ms)
    if load is None:
        return (f"the disks copied while it runs; it stops for the last round of changes "
                f"(not measured){booted}"), CUTOVER_MS + boot  # fmt: skip
    inc = predict_incremental(load, copy_rate(p), max_downtime_ms)
    return (f"its disks ({load.allocated_bytes / MIB:.0f} MiB, written at "
            f"{load.write_bytes_s / MIB:.1f} MiB/s) copied while it runs in {len(inc.rounds)} "
            f"rounds; it stops for about {inc.stop_ms / 1000:.1f} s for the last "
            f"{inc.last.copied_bytes / MIB:.1f} MiB{booted}"), inc.stop_ms + boot  # fmt: skip


def with_choice(options: MigrationOptions, choice: StrategyChoice) -> MigrationOptions:
    """``options`` with the chosen strategy and, when one was chosen, the stream and the
    disk copy."""
    chosen = replace(options, strategy=Strategy(choice.strategy.value))
    if choice.copy_storage:
        chosen = replace(chosen, copy_storage=True)
    if choice.parallel:
        chosen = replace(chosen, parallel=choice.parallel,
                         compression=Compression(choice.compression))  # fmt: skip
    return chosen
