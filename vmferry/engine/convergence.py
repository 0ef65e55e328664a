"""When a pre-copy migration does not converge, what to do next: a pure function of progress.

Pre-copy sends memory in passes; each pass sends what the guest dirtied during the previous
one. It converges once what is left fits in the downtime limit at the link's throughput
(``remaining <= throughput * downtime``). With a dirty rate ``d`` and throughput ``b`` each
pass is about ``r = d / b`` times the previous one, so the passes left and their time follow
from a geometric series; at ``r >= 1`` pre-copy never converges.

The policy escalates in the order the migration guides (and vMotion, Nova) use, one step at
a time, each recorded with its reason:

1. raise the downtime limit toward the user's maximum (doubling);
2. when the user allowed post-copy, switch to it as soon as even the limit's ceiling would
   not be enough (the throttle would be next): the guest runs on the destination at full
   speed while the rest follows on demand, instead of being slowed (Nova does the same: with
   ``live_migration_permit_post_copy`` it never uses auto-converge). Measured at 0.75x of the
   link: 14.3 s and a 75 ms pause, against 21.6 s and 223 ms throttling first
   (docs/performance.md);
3. otherwise let QEMU's auto-converge throttle the guest's vCPUs (harder at each step);

and aborts at the timeout (the source keeps running). A step is taken when pre-copy has
stopped shrinking over ``stall_passes`` passes, or when the model predicts that convergence
with the current settings would take longer than the first pass did (a pass of the whole
memory is the natural yardstick: it is the migration's lower bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from vmferry.model.migration import Escalation, EscalationStep, ProgressSample

# QEMU auto-converge settings per throttle level: (initial %, increment %, max %).
THROTTLE_LEVELS: tuple[tuple[int, int, int], ...] = ((40, 20, 80), (60, 20, 99))
NEVER = math.inf


@dataclass(frozen=True)
class PolicyConfig:
    max_downtime_ms: int = 300
    # Start low and double when pre-copy would take longer than its first pass. On QEMU 10
    # a 30 ms start pauses an idle lab guest 81-107 ms, against 186-262 ms when starting at
    # the 220 ms ceiling; 10 ms pauses it no less (the rest is the switchover's fixed cost).
    # The start was the ceiling while the QEMU 7.2 "hang after a short final pass" was not
    # understood: it is QEMU 7.2's TCG losing writes, which pre-flight now refuses
    # (migration.tcg-lost-writes; docs/performance.md).
    initial_downtime_ms: int = 30
    allow_postcopy: bool = False
    timeout_s: float = 600.0
    stall_passes: int = 2  # K: passes without shrinking that count as a stall
    shrink_factor: float = 0.9  # a pass "shrank" if it is below this share of the one K before
    min_gap_passes: int = 1  # passes to wait after a throttle step before the next step
    stall_timeout_s: float = 10.0  # no data moved for this long: the stream is dead, abort
    # Before the first byte: libvirt starts the destination's QEMU and QEMU opens the stream
    # (a TLS handshake with the migration certificates) while the job's counters stay at 0.
    # A slow host takes seconds for that; an address that does not answer fails in libvirt.
    start_timeout_s: float = 60.0
    # libvirt's job statistics did not answer for this long: decide blind, abort (the engine,
    # not this policy, acts on it: there are no samples to decide on)
    silence_timeout_s: float = 30.0
    # --copy-storage: what is left of the disks' copy must shrink over this many seconds
    mirror_window_s: float = 30.0
    # QEMU's limit covers the last RAM only; pausing, device state and the destination's
    # resume add to it (about 60-90 ms measured in the lab), so the policy keeps QEMU's limit
    # that far below the user's maximum, and the real downtime within it.
    switchover_overhead_ms: int = 80

    @property
    def downtime_ceiling_ms(self) -> int:
        return max(10, self.max_downtime_ms - self.switchover_overhead_ms)


@dataclass(frozen=True)
class PolicyState:
    downtime_ms: int
    throttle_level: int = 0  # 0: not escalated; n: THROTTLE_LEVELS[n - 1] applied
    postcopy: bool = False
    aborted: bool = False
    last_step_pass: int = 0  # the pass (iteration) of the last escalation
    judged_pass: int = 0  # the last pass whose start was judged (each pass is judged once)


@dataclass(frozen=True)
class Decision:
    state: PolicyState
    escalations: tuple[Escalation, ...] = ()


def initial_state(config: PolicyConfig) -> PolicyState:
    return PolicyState(downtime_ms=min(config.initial_downtime_ms, config.downtime_ceiling_ms))


def pass_sizes(samples: Sequence[ProgressSample]) -> list[tuple[int, int]]:
    """(iteration, bytes left when it began) for every pass after the first.

    The first sample of a pass shows what the guest dirtied during the previous pass.
    """
    sizes: list[tuple[int, int]] = []
    last = 0
    for sample in samples:
        if sample.iteration > last:
            last = sample.iteration
            if sample.iteration >= 2:
                sizes.append((sample.iteration, sample.memory_remaining_bytes))
    return sizes


def first_pass_seconds(samples: Sequence[ProgressSample]) -> float | None:
    """How long the first pass (all of memory) took, if it has ended."""
    begun = next((s for s in samples if s.iteration >= 1), None)
    ended = next((s for s in samples if s.iteration >= 2), None)
    if begun is None or ended is None:
        return None
    return max(0.001, (ended.elapsed_ms - begun.elapsed_ms) / 1000)


def predict_converge_seconds(
    remaining: int, dirty_rate: float, throughput: float, downtime_ms: int
) -> float:
    """Time until what is left fits into ``downtime_ms`` (``inf`` if it never will)."""
    target = throughput * downtime_ms / 1000
    if remaining <= target:
        return 0.0
    if throughput <= 0:
        return NEVER
    ratio = dirty_rate / throughput
    if ratio >= 0.95:
        return NEVER
    if ratio <= 0:
        return remaining / throughput
    passes = math.ceil(math.log(target / remaining) / math.log(ratio))
    return remaining / throughput * (1 - ratio**passes) / (1 - ratio)


def seconds_without_progress(samples: Sequence[ProgressSample]) -> float:
    """How long the processed-bytes counters (memory and disks) have not moved, up to the
    last sample."""
    now = samples[-1]
    since = now.elapsed_ms
    for sample in reversed(samples):
        if sample.moved_bytes != now.moved_bytes:
            break
        since = sample.elapsed_ms
    return (now.elapsed_ms - since) / 1000


def dead_stream(samples: Sequence[ProgressSample], config: PolicyConfig) -> str | None:
    """Why the stream counts as dead (nothing moved for too long), or None.

    Before the first byte moved the wait is the start-up's (``start_timeout_s``); after it,
    ``stall_timeout_s``. The reason says where the stream stopped."""
    now = samples[-1]
    idle_s = seconds_without_progress(samples)
    if now.moved_bytes == 0:
        if idle_s < config.start_timeout_s:
            return None
        return f"the migration stream did not start: no data moved in {idle_s:.0f} s"
    if idle_s < config.stall_timeout_s:
        return None
    mib = 2**20
    if now.copying_disks:
        return (f"the disks' copy stalled: no data moved for {idle_s:.0f} s "
                f"({now.disk_processed_bytes / mib:.0f} MiB sent, "
                f"{now.disk_remaining_bytes / mib:.0f} MiB left)")  # fmt: skip
    return (f"the migration stream stalled: no data moved for {idle_s:.0f} s (pass "
            f"{now.iteration}, {now.memory_processed_bytes / mib:.0f} MiB sent, "
            f"{now.memory_remaining_bytes / mib:.0f} MiB left)")  # fmt: skip


def mirror_behind(samples: Sequence[ProgressSample], config: PolicyConfig) -> str | None:
    """Why the disks' copy (``--copy-storage``, before memory moves) will not catch up, or
    None: it moves data, yet what is left of it is not below ``shrink_factor`` of what was
    left ``mirror_window_s`` ago (the guest writes its disks about as fast as the copy goes,
    or faster). libvirt moves memory only once the disks are in sync, so such a move would
    wait for the timeout."""
    now = samples[-1]
    if not now.copying_disks or now.disk_remaining_bytes == 0:
        return None
    cutoff = now.elapsed_ms - config.mirror_window_s * 1000
    earlier = [s for s in samples if s.copying_disks and s.elapsed_ms <= cutoff]
    then = earlier[-1] if earlier else None
    if then is None or then.disk_processed_bytes == 0:
        return None  # not copying for a whole window yet
    if now.disk_remaining_bytes < config.shrink_factor * then.disk_remaining_bytes:
        return None
    mib = 2**20
    ago = (now.elapsed_ms - then.elapsed_ms) / 1000
    rate = (now.disk_processed_bytes - then.disk_processed_bytes) / ago  # libvirt gives no bps
    return (f"the disks' copy does not catch up: {now.disk_remaining_bytes / mib:.0f} MiB left, "
            f"{then.disk_remaining_bytes / mib:.0f} MiB {ago:.0f} s ago, copying at "
            f"{rate / mib:.1f} MiB/s: the guest writes "
            "its disks as fast as that; move it with --strategy warm-incremental (it stops for "
            "the last changes) or cold")  # fmt: skip


def stalled(sizes: Sequence[tuple[int, int]], k: int, shrink_factor: float) -> bool:
    """True when the last pass is not clearly smaller than the one ``k`` passes before."""
    if len(sizes) <= k:
        return False
    return sizes[-1][1] >= shrink_factor * sizes[-1 - k][1]


def decide(samples: Sequence[ProgressSample], state: PolicyState, config: PolicyConfig) -> Decision:
    """The next state and the escalations to apply now (often none)."""
    if not samples or state.postcopy or state.aborted:
        return Decision(state)
    now = samples[-1]
    if now.elapsed_ms >= config.timeout_s * 1000:
        abort = Escalation(now.elapsed_ms, EscalationStep.ABORT, None,
                           f"no convergence within the {config.timeout_s:g} s timeout")  # fmt: skip
        return Decision(replace(state, aborted=True), (abort,))
    why = dead_stream(samples, config) or mirror_behind(samples, config)
    if why is not None:
        abort = Escalation(now.elapsed_ms, EscalationStep.ABORT, None, why)
        return Decision(replace(state, aborted=True), (abort,))
    sizes = pass_sizes(samples)
    yardstick = first_pass_seconds(samples)
    if not sizes or yardstick is None or now.iteration <= state.judged_pass:
        return Decision(state)  # judge each pass once, at its start, after the first pass
    state = replace(state, judged_pass=now.iteration)

    is_stalled = stalled(sizes, config.stall_passes, config.shrink_factor)
    # too slow even at the downtime ceiling: only the throttle or post-copy can help
    ceiling_slow = predict_converge_seconds(
        now.memory_remaining_bytes, now.dirty_rate_bytes_s, now.throughput_bytes_s,
        config.downtime_ceiling_ms) > yardstick  # fmt: skip
    steps: list[Escalation] = []
    while True:
        eta = predict_converge_seconds(now.memory_remaining_bytes, now.dirty_rate_bytes_s,
                                       now.throughput_bytes_s, state.downtime_ms)  # fmt: skip
        slow = eta > yardstick
        if not (slow or is_stalled):
            break
        why = _why(now, eta, yardstick, is_stalled, config.stall_passes)
        step = _next_step(now, state, config, why, ceiling_slow=ceiling_slow)
        if step is None:
            break
        state, escalation = step
        steps.append(escalation)
        is_stalled = False  # a stall is answered by one step; the model may ask for more
        if escalation.step is not EscalationStep.DOWNTIME:
            break  # throttling and post-copy need a pass to show their effect
    return Decision(state, tuple(steps))


def _why(now: ProgressSample, eta: float, yardstick: float, is_stalled: bool, k: int) -> str:
    mib = 2**20
    rates = (f"dirty {now.dirty_rate_bytes_s / mib:.1f} MiB/s vs throughput "
             f"{now.throughput_bytes_s / mib:.1f} MiB/s, {now.memory_remaining_bytes / mib:.0f} "
             "MiB left")  # fmt: skip
    if is_stalled:
        return f"pass {now.iteration}: not shrinking over {k} passes ({rates})"
    when = "never" if eta == NEVER else f"in about {eta:.1f} s"
    return (f"pass {now.iteration}: would converge {when}, the first pass took "
            f"{yardstick:.1f} s ({rates})")  # fmt: skip


def _next_step(
    now: ProgressSample, state: PolicyState, config: PolicyConfig, why: str, *,
    ceiling_slow: bool,
) -> tuple[PolicyState, Escalation] | None:  # fmt: skip
    """The step after ``why``; ``ceiling_slow``: pre-copy would be too slow even at the
    downtime ceiling (only the throttle or post-copy can help)."""
    ceiling = config.downtime_ceiling_ms
    if config.allow_postcopy and (ceiling_slow or state.downtime_ms >= ceiling):
        return (
            replace(state, postcopy=True, last_step_pass=now.iteration),
            Escalation(now.elapsed_ms, EscalationStep.POSTCOPY, None,
                       f"{why}; even at {ceiling} ms downtime pre-copy would need the "
                       "throttle: post-copy instead"),
        )  # fmt: skip
    if state.downtime_ms < ceiling:
        downtime = min(ceiling, state.downtime_ms * 2)
        return (
            replace(state, downtime_ms=downtime, last_step_pass=now.iteration),
            Escalation(now.elapsed_ms, EscalationStep.DOWNTIME, downtime, why),
        )
    waited = now.iteration - state.last_step_pass >= config.min_gap_passes
    if state.throttle_level < len(THROTTLE_LEVELS) and (state.throttle_level == 0 or waited):
        level = state.throttle_level + 1
        initial, increment, cap = THROTTLE_LEVELS[level - 1]
        return (
            replace(state, throttle_level=level, last_step_pass=now.iteration),
            Escalation(now.elapsed_ms, EscalationStep.THROTTLE, cap,
                       f"{why}; auto-converge from {initial}% +{increment}% per pass, "
                       f"up to {cap}%"),
        )  # fmt: skip
    return None


def throttle_parameters(level: int) -> tuple[int, int, int]:
    """QEMU's (cpu-throttle-initial, cpu-throttle-increment, max-cpu-throttle) for a level."""
    return THROTTLE_LEVELS[level - 1]


@dataclass(frozen=True)
class CapPlan:
    """A vCPU cap to set before the migration starts (``percent`` None: no cap)."""

    percent: int | None
    reason: str


def plan_vcpu_cap(
    memory_bytes: int,
    dirty_rate_bytes_s: float,
    vcpu_busy: float,
    link_bytes_s: float,
    config: PolicyConfig,
    *,
    target_ratio: float = 0.25,
    bounds: tuple[int, int] = (10, 90),
) -> CapPlan:
    """Should the guest be slowed from the start, and how much?

    QEMU's auto-converge can act only from the end of the second pass; a guest that dirties
    memory near the link's rate has rewritten its working set twice by then. If the model
    predicts that pre-copy would need longer than the first pass to converge, cap the vCPUs
    so that the dirty rate falls to ``target_ratio`` of the link, assuming it scales with
    the CPU the guest gets (``vcpu_busy``: the share of its vCPUs it used, 0..1).
    """
    mib = 2**20
    if link_bytes_s <= 0 or dirty_rate_bytes_s <= 0:
        return CapPlan(None, "nothing to slow: the guest dirties no memory")
    first_pass_s = memory_bytes / link_bytes_s
    left_after = min(memory_bytes, dirty_rate_bytes_s * first_pass_s)
    eta = predict_converge_seconds(round(left_after), dirty_rate_bytes_s, link_bytes_s,
                                   config.downtime_ceiling_ms)  # fmt: skip
    facts = (f"dirty {dirty_rate_bytes_s / mib:.1f} MiB/s = "
             f"{dirty_rate_bytes_s / link_bytes_s:.2f} x the link")  # fmt: skip
    if eta <= first_pass_s:
        return CapPlan(None, f"{facts}: pre-copy converges by itself")
    busy = min(1.0, max(0.05, vcpu_busy))
    percent = round(100 * busy * target_ratio * link_bytes_s / dirty_rate_bytes_s)
    if percent >= bounds[1]:
        return CapPlan(None, f"{facts}: a cap of {percent}% would change nothing")
    percent = max(bounds[0], percent)
    when = "never" if eta == NEVER else f"in about {eta:.0f} s"
    return CapPlan(percent, f"{facts}, vCPUs {busy:.0%} busy: pre-copy would converge {when} "
                   f"(first pass {first_pass_s:.0f} s); cap the vCPUs at {percent}% "
                   f"from the start")  # fmt: skip
