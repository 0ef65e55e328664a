"""Predict a live migration before it runs: the pre-copy round model and its calibration.

Pre-copy (QEMU's RAM migration) sends memory in rounds. Round 0 sends every non-zero page
(a zero page costs a few header bytes: ``zero_fraction`` of the memory is nearly free). Each
next round sends what the guest dirtied during the previous one, at most its working set.
QEMU switches over when what is left would take no longer than its downtime limit at the
measured throughput (``remaining <= throughput * limit``); the last remainder is sent with
the VM paused, and pausing, device state and resuming on the destination add a fixed
switchover cost. When a round is not clearly smaller than the one before, pre-copy does not
converge by itself: vmferry's policy then throttles the guest or, if allowed, switches to
post-copy instead (:func:`with_early_postcopy`; see :mod:`vmferry.engine.convergence`).

vmferry gives QEMU a downtime limit below the user's maximum (the switchover overhead is
kept in reserve, :attr:`PolicyConfig.downtime_ceiling_ms`), starting low and doubling while
the passes after the first would outlast it; the model settles on the limit the policy would
(:func:`predict`).

The model's two free constants, the link's efficiency and the fixed costs, are fitted from
completed jobs (:func:`fit_calibration`); with fewer than :data:`MIN_JOBS` jobs the defaults
measured in the lab (docs/performance.md) apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from vmferry.engine.convergence import PolicyConfig

MIB = 2**20
MAX_ROUNDS = 30  # QEMU has no such limit; a model that needs more does not converge usefully
SHRINK = 0.95  # a round must be below this share of the previous one to count as shrinking
MIN_JOBS = 3  # fewer completed jobs than this: the default calibration
MIN_PLANE_JOBS = 20  # fewer than this: no dirty slowdown fitted (with 8-11 lab jobs it overfit)


@dataclass(frozen=True)
class PredictInputs:
    """What the model needs; every figure in bytes, bytes/s, a share or ms."""

    memory_bytes: int
    dirty_rate_bytes_s: float
    link_bytes_s: float
    zero_fraction: float = 0.0  # share of memory that is zero pages (0..1)
    downtime_limit_ms: int = 300  # the user's maximum downtime (vmferry's max_downtime_ms)
    working_set_bytes: int | None = None  # None: all non-zero memory can be dirtied
    channels: int = 1  # multifd channels (1: the single stream)
    compression_ratio: float = 1.0  # bytes on the wire over the non-zero bytes (zstd: < 1)

    @property
    def nonzero_bytes(self) -> int:
        share = min(1.0, max(0.0, self.zero_fraction))
        return round(self.memory_bytes * (1 - share))

    @property
    def wire_share(self) -> float:
        """Bytes on the wire per guest byte sent (compression's ratio, held to 0.01..1)."""
        return min(1.0, max(0.01, self.compression_ratio))

    @property
    def dirtiable_bytes(self) -> int:
        """The most one round can find dirty: the working set, else the non-zero memory."""
        if self.working_set_bytes is None:
            return self.nonzero_bytes
        return max(0, min(self.memory_bytes, self.working_set_bytes))


@dataclass(frozen=True)
class Calibration:
    """The fitted constants: ``efficiency`` (share of the link rate the stream achieves),
    ``setup_ms`` (connection, destination start and the end of the job, not transfer),
    ``switchover_ms`` (pausing, device state, resuming, on top of the last RAM),
    ``bytes_factor`` (actual over modelled bytes: pages the balloon calls free but that are
    not zero, protocol overhead), ``dirty_slowdown`` (the stream slows by
    ``1 + dirty_slowdown x dirty rate / link`` while the guest dirties memory: under TCG the
    guest's writes to tracked pages take CPU from QEMU's migration thread),
    ``report_lag_ms`` (libvirt's downtime figure over the guest's pause: it is counted by the
    migration's control path, which ends after the destination resumed). ``jobs`` is how
    many jobs it was fitted from (0: default)."""

    # the defaults: bench/predict.py's calibration fitted on its 12 cells, run of
    # 2026-12-06 on QEMU 10.0.2 + libvirt 11.3.0 with the send queue bounded
    # (docs/performance.md, "Prediction"), rounded
    efficiency: float = 0.96
    setup_ms: float = 700.0
    switchover_ms: float = 50.0
    bytes_factor: float = 1.1
    dirty_slowdown: float = 0.0
    jobs: int = 0
    report_lag_ms: float = 14.0


DEFAULT_CALIBRATION = Calibration()


@dataclass(frozen=True)
class Round:
    index: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Prediction:
    """What the model expects. When pre-copy does not converge, the figures are those of
    pre-copy until it stops shrinking followed by a post-copy switch (the rest sent once,
    the pause only the switchover); ``converges`` says which. ``guest_pause_ms`` is the
    guest's pause (QEMU's STOP -> RESUME, what vmferry's ``guest_pause_ms`` measures and the
    user's maximum downtime bounds); ``downtime_ms`` is the figure libvirt will report for
    it. ``transferred_bytes`` are the bytes on the wire (after compression)."""

    converges: bool
    total_time_ms: int
    guest_pause_ms: int
    transferred_bytes: int
    rounds: tuple[Round, ...]
    inputs: PredictInputs
    qemu_limit_ms: int = 0
    calibration: Calibration = field(default=DEFAULT_CALIBRATION)

    @property
    def first_pass_s(self) -> float:
        return self.rounds[0].seconds if self.rounds else 0.0

    @property
    def later_passes_s(self) -> float:
        """The passes after the first: what the policy weighs against the first."""
        return sum(r.seconds for r in self.rounds[1:])

    @property
    def downtime_ms(self) -> int:
        """libvirt's downtime figure: the pause and the control path after it."""
        return self.guest_pause_ms + round(max(0.0, self.calibration.report_lag_ms))


def qemu_downtime_limit_ms(max_downtime_ms: int) -> int:
    """The highest limit vmferry gives QEMU for a user maximum (the policy's ceiling)."""
    return PolicyConfig(max_downtime_ms=max_downtime_ms).downtime_ceiling_ms


def policy_limits_ms(max_downtime_ms: int) -> list[int]:
    """The limits the policy tries, in order: its start, doubled up to the ceiling."""
    config = PolicyConfig(max_downtime_ms=max_downtime_ms)
    limits = [min(config.initial_downtime_ms, config.downtime_ceiling_ms)]
    while limits[-1] < config.downtime_ceiling_ms:
        limits.append(min(config.downtime_ceiling_ms, limits[-1] * 2))
    return limits


def predict(inputs: PredictInputs, calibration: Calibration = DEFAULT_CALIBRATION) -> Prediction:
    """Run the pre-copy round model (pure) at the limit the policy would settle on: the
    first of its limits (:func:`policy_limits_ms`) at which the passes after the first take
    no longer than the first (the policy raises the limit while they would), else its
    ceiling."""
    if inputs.memory_bytes < 0 or inputs.link_bytes_s <= 0:
        raise ValueError("memory must be >= 0 and the link rate > 0")
    limits = policy_limits_ms(inputs.downtime_limit_ms)
    for limit_ms in limits[:-1]:
        found = _predict_at(inputs, calibration, limit_ms)
        if not policy_would_escalate(found):
            return found
    return _predict_at(inputs, calibration, limits[-1])


def _predict_at(inputs: PredictInputs, calibration: Calibration, limit_ms: int) -> Prediction:
    """Rounds in the guest's bytes; their time and the bytes sent on the wire, which
    compression makes ``compression_ratio`` of them. QEMU's switchover test compares the
    guest bytes left with the rate it measured on the wire (``threshold``), so compression
    lets it switch over with more left, sent in the same time."""
    rate = _wire_rate(inputs, calibration)
    ratio = inputs.wire_share
    threshold = rate * limit_ms / 1000

    size = inputs.nonzero_bytes * _bytes_scale(calibration)
    rounds: list[Round] = []
    converges = False
    while True:
        seconds = size * ratio / rate
        rounds.append(Round(len(rounds), round(size * ratio), seconds))
        left = _dirtied(inputs, calibration, seconds)
        if left <= threshold:
            converges = True
            break
        if left >= SHRINK * size or len(rounds) >= MAX_ROUNDS:
            break
        size = left
    sent = sum(r.bytes for r in rounds)
    transfer_s = sum(r.seconds for r in rounds)
    final_s = left * ratio / rate
    pause = calibration.switchover_ms + (final_s * 1000 if converges else 0.0)
    # QEMU's total includes the downtime; the fitted setup holds its fixed part
    total_ms = calibration.setup_ms + transfer_s * 1000 + final_s * 1000
    return Prediction(
        converges=converges,
        total_time_ms=round(total_ms),
        guest_pause_ms=round(pause),
        transferred_bytes=round(sent + left * ratio),
        rounds=tuple(rounds),
        inputs=inputs,
        qemu_limit_ms=limit_ms,
        calibration=calibration,
    )


def _bytes_scale(calibration: Calibration) -> float:
    return max(0.1, calibration.bytes_factor)


def _dirtied(inputs: PredictInputs, calibration: Calibration, seconds: float) -> float:
    """What the guest dirties in ``seconds`` (modelled bytes), at most what it can dirty."""
    most = inputs.dirtiable_bytes * _bytes_scale(calibration)
    return min(most, max(0.0, inputs.dirty_rate_bytes_s) * seconds)


def _wire_rate(inputs: PredictInputs, calibration: Calibration) -> float:
    """The stream's rate on the wire (bytes/s) while the guest dirties its memory."""
    dirty = max(0.0, inputs.dirty_rate_bytes_s)
    slowdown = 1 + max(0.0, calibration.dirty_slowdown) * dirty / inputs.link_bytes_s
    return inputs.link_bytes_s * max(0.01, calibration.efficiency) / slowdown


def with_early_postcopy(prediction: Prediction) -> Prediction:
    """The move when post-copy is allowed and the policy would otherwise escalate past the
    downtime limit (:func:`policy_would_escalate`): it switches to post-copy at its first
    judgment, so the first pass, then what the guest dirtied during it sent once while the
    guest runs on the destination; the pause is the switchover's alone. ``converges`` is
    False (pre-copy did not finish the move)."""
    inputs, cal = prediction.inputs, prediction.calibration
    if not prediction.rounds:
        return prediction
    first = prediction.rounds[0]
    left = _dirtied(inputs, cal, first.seconds)
    rest_s = left * inputs.wire_share / _wire_rate(inputs, cal)
    return replace(
        prediction,
        converges=False,
        total_time_ms=round(cal.setup_ms + (first.seconds + rest_s) * 1000),
        guest_pause_ms=round(cal.switchover_ms),
        transferred_bytes=round(first.bytes + left * inputs.wire_share),
        rounds=(first,),
    )


def policy_would_escalate(prediction: Prediction) -> bool:
    """Would vmferry's policy escalate (raise the limit, throttle)? It does when, after the
    first pass, converging is predicted to take longer than that pass took
    (:func:`vmferry.engine.convergence.decide`); the model then overestimates the time."""
    if not prediction.converges:
        return True
    return prediction.later_passes_s > prediction.first_pass_s


@dataclass(frozen=True)
class Observation:
    """One completed job, for the calibration: what was measured and what was modelled."""

    link_bytes_s: float
    total_time_ms: int
    downtime_ms: int  # libvirt's figure
    transferred_bytes: int
    predicted_bytes: int  # the model's bytes with bytes_factor 1
    predicted_final_ms: float  # the model's last remainder over the link, in ms
    dirty_share: float = 0.0  # the measured dirty rate over the link rate
    guest_pause_ms: int | None = None  # the guest's pause, where vmferry measured it


def fit_calibration(
    jobs: Sequence[Observation], default: Calibration = DEFAULT_CALIBRATION
) -> Calibration:
    """Least squares over completed jobs (pure).

    - total time = setup + transferred / (efficiency * link): a line through
      (transferred / link, total) gives ``1 / efficiency`` (slope) and ``setup_ms``;
    - pause = switchover + remainder: the mean of (pause - modelled remainder), the pause
      being the guest's where it was measured, else libvirt's figure less the report lag;
    - report lag: the mean of (libvirt's downtime - the guest's pause) over the jobs that
      measured both;
    - bytes_factor: the slope through the origin of actual over modelled bytes.

    Fewer than :data:`MIN_JOBS` usable jobs, or a fit outside sane bounds (efficiency
    0.3..1.2, setup 0..10 s), keep the default for that constant.
    """
    usable = [
        j for j in jobs if j.link_bytes_s > 0 and j.total_time_ms > 0 and j.transferred_bytes > 0
    ]
    if len(usable) < MIN_JOBS:
        return default
    xs = [j.transferred_bytes / j.link_bytes_s * 1000 for j in usable]  # ms at the full link
    ys = [float(j.total_time_ms) for j in usable]
    efficiency, setup, slowdown = default.efficiency, default.setup_ms, default.dirty_slowdown
    shares = [max(0.0, j.dirty_share) for j in usable]
    plane = _plane(xs, [x * s for x, s in zip(xs, shares, strict=True)], ys)
    fitted = _line(xs, ys)
    if plane is not None and len(usable) >= MIN_PLANE_JOBS:
        setup, inverse, extra = plane
        if 1 / 1.2 <= inverse <= 1 / 0.3 and 0 <= extra <= 10 * inverse and 0 <= setup <= 10_000:
            efficiency, slowdown = 1 / inverse, extra / inverse
            fitted = None  # the plane fitted
        else:
            setup = default.setup_ms
    if fitted is not None:
        slope, intercept = fitted
        if slope > 0 and 0.3 <= 1 / slope <= 1.2 and 0 <= intercept <= 10_000:
            efficiency, setup = 1 / slope, intercept
        else:  # keep the default slope, fit only the fixed cost
            mean = sum(y - x / efficiency for x, y in zip(xs, ys, strict=True)) / len(xs)
            if 0 <= mean <= 10_000:
                setup = mean
    lag = default.report_lag_ms
    lags = [j.downtime_ms - j.guest_pause_ms for j in usable
            if j.guest_pause_ms is not None and j.downtime_ms > 0]  # fmt: skip
    if len(lags) >= MIN_JOBS and 0 <= sum(lags) / len(lags) <= 500:
        lag = sum(lags) / len(lags)
    pauses = [j.guest_pause_ms if j.guest_pause_ms is not None else max(0, j.downtime_ms - lag)
              for j in usable]  # fmt: skip
    residuals = [pause - j.predicted_final_ms / efficiency
                 for pause, j in zip(pauses, usable, strict=True)]  # fmt: skip
    switchover = sum(residuals) / len(residuals)
    if not 0 <= switchover <= 5_000:
        switchover = default.switchover_ms
    modelled = [j.predicted_bytes for j in usable]
    denominator = sum(m * m for m in modelled)
    factor = default.bytes_factor
    if denominator > 0:
        factor = sum(m * j.transferred_bytes for m, j in zip(modelled, usable, strict=True))
        factor /= denominator
        if not 0.5 <= factor <= 3:
            factor = default.bytes_factor
    return Calibration(
        efficiency=efficiency,
        setup_ms=setup,
        switchover_ms=switchover,
        bytes_factor=factor,
        dirty_slowdown=slowdown,
        jobs=len(usable),
        report_lag_ms=lag,
    )


def _plane(
    xs: Sequence[float], zs: Sequence[float], ys: Sequence[float]
) -> tuple[float, float, float] | None:
    """Least-squares (intercept, x slope, z slope) of y; None when singular."""
    rows = [(1.0, x, z) for x, z in zip(xs, zs, strict=True)]
    a = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
    b = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(3)]
    det = _det3(a)
    if abs(det) <= 1e-12 * max(1.0, abs(a[1][1] * a[2][2])) * max(1.0, a[0][0]):
        return None
    solution = []
    for col in range(3):
        m = [[b[i] if j == col else a[i][j] for j in range(3)] for i in range(3)]
        solution.append(_det3(m) / det)
    return solution[0], solution[1], solution[2]


def _det3(m: Sequence[Sequence[float]]) -> float:
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))  # fmt: skip


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept); None when the xs do not vary."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 1e-9 * max(1.0, mx * mx):
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * min(1.0, max(0.0, q))
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
