"""`vmferry predict`: what a live migration of a VM would take, before anything runs.

The inputs, and where each comes from:

- memory: the VM's configured memory;
- zero fraction: the guest's balloon driver (``unused`` over the VM's memory: free pages of
  a guest are mostly zero pages, which pre-copy sends as a few header bytes); without balloon
  statistics the newest stored profile sample, else 0 (every page sent);
- working set: what the balloon reports in use (available - unused), the most one round
  can find dirty;
- dirty rate: QEMU's ``calc-dirty-rate`` over 1 s with 10000 sample pages per GiB
  (:func:`vmferry.drivers.qemu_monitor.measure_dirty_rate`; libvirt's own call samples 512
  pages per GiB, too few on a small guest); when QEMU refuses, the p95 of the stored profile;
- link: ``bandwidth_mib_s`` if given, else the lab's shaped link rate for lab hosts (the
  rate vmferry migrates at there), else :data:`DEFAULT_LINK_BYTES_S` (not measured: pass
  the real migration bandwidth);
- downtime limit: the user's maximum (``max_downtime_ms``), of which vmferry gives QEMU
  all but the switchover reserve;
- the stream: multifd channels as the move will use them, and for zstd the compression
  ratio measured on a sample of the guest's memory (:func:`compression_of`).

The calibration is fitted from the store's completed jobs that kept a prediction
(:func:`calibration_from_store`). :func:`before_migration` and :func:`after_migration` are
the hooks :mod:`vmferry.service.migrate` calls; neither ever raises.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from vmferry.drivers.guest_memory import CHUNK_BYTES, sample_memory
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_stats import read_counters
from vmferry.drivers.qemu_monitor import measure_dirty_rate
from vmferry.errors import BadInputError, VmferryError
from vmferry.model import Host, VmState
from vmferry.model.migration import Compression, EscalationStep, JobStatus, MigrationResult
from vmferry.predict.compression import zstd_sample
from vmferry.predict.model import (
    DEFAULT_CALIBRATION,
    Calibration,
    Observation,
    PredictInputs,
    Prediction,
    fit_calibration,
    policy_would_escalate,
    predict,
)
from vmferry.service.locate import locate
from vmferry.store.db import Store, open_store

__all__ = [
    "DEFAULT_LINK_BYTES_S",
    "PredictReport",
    "after_migration",
    "before_migration",
    "calibration_from_store",
    "gather_inputs",
    "predict_migration",
    "prediction_json",
]

MIB = 2**20
DEFAULT_LINK_BYTES_S = 1_000_000_000 / 8  # 1 Gbit/s, assumed when nothing better is known
JSON_INPUTS = (
    "memory_bytes",
    "dirty_rate_bytes_s",
    "link_bytes_s",
    "zero_fraction",
    "downtime_limit_ms",
)


@dataclass(frozen=True)
class PredictReport:
    vm: str
    source: str
    destination: str
    prediction: Prediction
    basis: dict[str, str] = field(default_factory=dict)  # input -> where it came from
    escalates: bool = False  # vmferry's policy would escalate (the model then overestimates)


def link_for(destination: Host, bandwidth_mib_s: int | None) -> tuple[float, str]:
    """The migration link rate in bytes/s and where it came from."""
    if bandwidth_mib_s:
        return bandwidth_mib_s * MIB, f"--bandwidth-mib-s {bandwidth_mib_s}"
    if destination.link_mbps:
        return (destination.link_mbps * 1_000_000 / 8,
                f"{destination.name}'s link, {destination.link_mbps} Mbit/s")  # fmt: skip
    return DEFAULT_LINK_BYTES_S, "assumed 1 Gbit/s (not measured; pass --bandwidth-mib-s)"


SAMPLE_CHUNKS = 128  # 8 MiB of guest memory read to measure its compression


def compression_of(conn: LibvirtHost, vm: str, memory_bytes: int,
                   compression: Compression) -> tuple[float, str]:  # fmt: skip
    """The ratio of wire bytes to non-zero bytes the stream's compression gives the VM's
    memory, and where it came from: for zstd measured on :data:`SAMPLE_CHUNKS` chunks of
    its memory (QEMU's level 1); without compression 1; XBZRLE is not modelled (1)."""
    if compression is Compression.NONE:
        return 1.0, "no compression"
    if compression is not Compression.ZSTD:
        return 1.0, f"{compression} is not modelled: taken as 1"
    try:
        sample = zstd_sample(sample_memory(conn, vm, memory_bytes, SAMPLE_CHUNKS))
    except VmferryError as exc:
        return 1.0, f"not measured ({exc.message}): taken as 1"
    return round(sample.ratio, 4), (
        f"zstd level 1 over {sample.sampled_bytes // CHUNK_BYTES} samples of 64 KiB of the "
        f"guest's memory ({sample.nonzero_bytes / MIB:.1f} MiB not zero)"
    )


def gather_inputs(
    conn: LibvirtHost,
    vm: str,
    memory_bytes: int,
    link_bytes_s: float,
    max_downtime_ms: int,
    *,
    store: Store | None = None,
    channels: int = 1,
    compression: Compression = Compression.NONE,
) -> tuple[PredictInputs, dict[str, str]]:
    """Measure VM ``vm`` on its host (about 1 s) and build the model's inputs, for a move
    over ``channels`` multifd channels (1: the single stream) with ``compression``."""
    basis: dict[str, str] = {"memory_bytes": "the VM's configured memory"}
    zero: float | None = None
    working: int | None = None
    try:
        counters = read_counters(conn, [vm], 0.0).get(vm)
    except VmferryError:
        counters = None
    if counters is not None and counters.unused_bytes is not None and memory_bytes:
        zero = min(1.0, counters.unused_bytes / memory_bytes)
        basis["zero_fraction"] = "balloon statistics (unused / memory)"
        if counters.available_bytes is not None:
            working = max(0, counters.available_bytes - counters.unused_bytes)
            basis["working_set_bytes"] = "balloon statistics (available - unused)"
    dirty: float | None = None
    for attempt in range(2):  # QEMU refuses while an earlier measurement (a profile) runs
        try:
            dirty = float(measure_dirty_rate(conn, vm))
            basis["dirty_rate_bytes_s"] = "QEMU calc-dirty-rate, 1 s, 10000 pages/GiB"
            break
        except VmferryError:
            if attempt == 0:
                time.sleep(1.5)
    if dirty is None or zero is None:
        recent = (store or open_store()).profile_samples(vm, limit=300)
        if dirty is None:
            rates = sorted(r for s in recent if (r := s.get("dirty_rate_bytes_s")) is not None)
            dirty = rates[int(0.95 * (len(rates) - 1))] if rates else 0.0
            basis["dirty_rate_bytes_s"] = (
                f"p95 of {len(rates)} stored profile samples" if rates else "unknown, taken as 0"
            )
        if zero is None:
            newest = next((s for s in reversed(recent) if s.get("memory_unused_bytes")), None)
            if newest is not None and memory_bytes:
                zero = min(1.0, (newest.get("memory_unused_bytes") or 0) / memory_bytes)
                basis["zero_fraction"] = f"stored profile sample of {newest.taken_at}"
            else:
                zero = 0.0
                basis["zero_fraction"] = "unknown (no balloon statistics), taken as 0"
    ratio, basis["compression_ratio"] = compression_of(conn, vm, memory_bytes, compression)
    basis["channels"] = f"{channels} multifd channels" if channels >= 2 else "the single stream"
    inputs = PredictInputs(
        memory_bytes=memory_bytes,
        dirty_rate_bytes_s=dirty,
        link_bytes_s=link_bytes_s,
        zero_fraction=round(zero, 4),
        downtime_limit_ms=max_downtime_ms,
        working_set_bytes=working,
        channels=max(1, channels),
        compression_ratio=ratio,
    )
    return inputs, basis


def calibration_from_store(store: Store | None = None) -> Calibration:
    """Fit the model's constants from completed jobs that kept a prediction (pure-copy
    jobs only: throttled or post-copy jobs do not follow the plain model)."""
    store = store or open_store()
    observations = []
    neutral = Calibration(efficiency=1.0, setup_ms=0, switchover_ms=0, bytes_factor=1.0,
                          report_lag_ms=0.0)  # fmt: skip
    for record in store.list_predictions(with_actual=True):
        actual = record.actual or {}
        # a job that moved but failed its verification still measured the migration
        if not actual.get("moved", actual.get("status") == JobStatus.COMPLETED.value):
            continue
        if actual.get("escalated"):
            continue
        if None in (actual.get("total_time_ms"), actual.get("transferred_bytes")):
            continue
        try:
            inputs = PredictInputs(**record.predicted["model_inputs"])
        except (KeyError, TypeError):
            continue
        modelled = predict(inputs, neutral)
        observations.append(
            Observation(
                link_bytes_s=inputs.link_bytes_s,
                total_time_ms=int(actual["total_time_ms"]),
                downtime_ms=int(actual.get("downtime_ms") or 0),
                transferred_bytes=int(actual["transferred_bytes"]),
                predicted_bytes=modelled.transferred_bytes,
                predicted_final_ms=float(modelled.guest_pause_ms),
                dirty_share=inputs.dirty_rate_bytes_s / inputs.link_bytes_s,
                # what the guest saw, where it was measured
                guest_pause_ms=_int_or_none(actual.get("guest_pause_ms")),
            )
        )
    return fit_calibration(observations, DEFAULT_CALIBRATION)


def predict_migration(
    vm: str,
    to: str,
    *,
    max_downtime_ms: int = 300,
    bandwidth_mib_s: int | None = None,
    store: Store | None = None,
    calibration: Calibration | None = None,
    parallel: int = 0,
    compression: Compression = Compression.NONE,
) -> PredictReport:
    """Predict moving VM ``vm`` to registered host ``to`` live (measures the VM ~1 s), over
    ``parallel`` multifd channels (0 or 1: the single stream) with ``compression``."""
    store = store or open_store()
    destination = store.get_host(to)
    found = locate(vm)
    if found.host.name == destination.name:
        raise BadInputError(f"VM {vm!r} already runs on {to}")
    if found.record.state is not VmState.RUNNING:
        raise BadInputError(
            f"VM {vm!r} is {found.record.state} on {found.host.name}; only a "
            "running VM can be measured for a live migration"
        )
    link, link_basis = link_for(destination, bandwidth_mib_s)
    with LibvirtHost.connect(found.host.name, found.host.uri) as conn:
        inputs, basis = gather_inputs(
            conn, vm, found.record.spec.memory_bytes, link, max_downtime_ms, store=store,
            channels=parallel, compression=compression,
        )  # fmt: skip
    basis["link_bytes_s"] = link_basis
    return _report(vm, found.host, destination, inputs, basis, calibration, store)


def _report(
    vm: str,
    source: Host,
    destination: Host,
    inputs: PredictInputs,
    basis: dict[str, str],
    calibration: Calibration | None,
    store: Store,
) -> PredictReport:
    cal = calibration or calibration_from_store(store)
    basis["calibration"] = (
        f"fitted from {cal.jobs} completed jobs"
        if cal.jobs
        else "default (fewer than 3 completed jobs with a prediction)"
    )
    prediction = predict(inputs, cal)
    return PredictReport(
        vm, source.name, destination.name, prediction, basis, policy_would_escalate(prediction)
    )


def prediction_json(report: PredictReport) -> dict[str, Any]:
    """The documented `vmferry predict --json` document."""
    p, i = report.prediction, report.prediction.inputs
    return {
        "vm": report.vm,
        "destination": report.destination,
        "converges": p.converges,
        "total_time_ms": p.total_time_ms,
        "guest_pause_ms": p.guest_pause_ms,
        "downtime_ms": p.downtime_ms,
        "transferred_bytes": p.transferred_bytes,
        "inputs": {
            "memory_bytes": i.memory_bytes,
            "dirty_rate_bytes_s": round(i.dirty_rate_bytes_s),
            "link_bytes_s": round(i.link_bytes_s),
            "zero_fraction": i.zero_fraction,
            "downtime_limit_ms": i.downtime_limit_ms,
            "channels": i.channels,
            "compression_ratio": i.compression_ratio,
        },
    }


def _stored(report: PredictReport) -> dict[str, Any]:
    """What the store keeps: the JSON document plus everything to refit and explain it."""
    p = report.prediction
    return {
        **prediction_json(report),
        "source": report.source,
        "rounds": len(p.rounds),
        "qemu_limit_ms": p.qemu_limit_ms,
        "escalates": report.escalates,
        "basis": report.basis,
        "calibration": {
            "efficiency": p.calibration.efficiency,
            "setup_ms": p.calibration.setup_ms,
            "switchover_ms": p.calibration.switchover_ms,
            "bytes_factor": p.calibration.bytes_factor,
            "dirty_slowdown": p.calibration.dirty_slowdown,
            "report_lag_ms": p.calibration.report_lag_ms,
            "jobs": p.calibration.jobs,
        },
        "model_inputs": {
            "memory_bytes": p.inputs.memory_bytes,
            "dirty_rate_bytes_s": p.inputs.dirty_rate_bytes_s,
            "link_bytes_s": p.inputs.link_bytes_s,
            "zero_fraction": p.inputs.zero_fraction,
            "downtime_limit_ms": p.inputs.downtime_limit_ms,
            "working_set_bytes": p.inputs.working_set_bytes,
            "channels": p.inputs.channels,
            "compression_ratio": p.inputs.compression_ratio,
        },
    }


def before_migration(
    store: Store,
    job_id: str,
    vm: str,
    source: Host,
    destination: Host,
    memory_bytes: int,
    bandwidth_mib_s: int | None,
    max_downtime_ms: int,
    note: Any = None,
    *,
    parallel: int = 0,
    compression: Compression = Compression.NONE,
) -> PredictReport | None:
    """Predict job ``job_id`` (its stream: ``parallel`` channels, ``compression``) and keep
    the prediction with it; None (and a job note) if anything fails: a prediction never
    stops a migration."""
    try:
        link, link_basis = link_for(destination, bandwidth_mib_s)
        with LibvirtHost.connect(source.name, source.uri, timeout_s=5) as conn:
            inputs, basis = gather_inputs(
                conn, vm, memory_bytes, link, max_downtime_ms, store=store,
                channels=parallel, compression=compression,
            )  # fmt: skip
        basis["link_bytes_s"] = link_basis
        report = _report(vm, source, destination, inputs, basis, None, store)
        store.save_prediction(job_id, vm, source.name, destination.name, _stored(report))
        p = report.prediction
        message = (
            f"predicted: {'converges' if p.converges else 'does not converge'}, "
            f"{p.total_time_ms / 1000:.1f} s, {p.guest_pause_ms} ms pause, "
            f"{p.transferred_bytes / MIB:.0f} MiB"
        )
        store.add_event(job_id, "prediction", message, {"prediction": prediction_json(report)})
        if note is not None:
            note(message)
        return report
    except Exception as exc:  # never fail the migration for a prediction
        _note_failure(store, job_id, f"no prediction: {exc}")
        return None


def after_migration(store: Store, result: MigrationResult) -> None:
    """Put the actual figures beside the job's prediction (if it has one); never raises."""
    try:
        if store.get_prediction(result.job_id) is None:
            return
        steps = {e.step for e in result.escalations}
        actual = {
            "status": result.status.value,
            "moved": result.verification is not None
            and result.verification.running_on_destination
            and result.total_time_ms is not None,
            "converged": result.status is JobStatus.COMPLETED
            and EscalationStep.POSTCOPY not in steps,
            "escalated": bool(steps - {EscalationStep.DOWNTIME}),
            "total_time_ms": result.total_time_ms,
            "downtime_ms": result.downtime_ms,
            "guest_pause_ms": result.guest_pause_ms,
            "transferred_bytes": result.transferred_bytes,
            "iterations": result.iterations,
        }
        store.record_actual(result.job_id, actual)
    except Exception as exc:
        _note_failure(store, result.job_id, f"could not record the actual figures: {exc}")


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _note_failure(store: Store, job_id: str, message: str) -> None:
    with contextlib.suppress(Exception):  # the store itself failed: nothing more to do
        store.add_event(job_id, "note", message, {})
