"""Prediction benchmark: `vmferry predict`'s figures against real lab migrations.

A grid of memory (256, 512 MiB) x dirty rate (0, 10% and 30% of the link, set through the
guest's workload rate) x link rate (200, 400 Mbit/s). Per cell a fresh lab guest (working
set: half its memory) is migrated kvm1 -> kvm2 by `vmferry migrate` (service.migrate), which
predicts the move before it runs and keeps the prediction beside the actual figures
(QEMU's, from the destination's completed job). The store is a fresh SQLite database, so the
first three cells use the default calibration and later ones a calibration fitted from the
cells before them, as a user's store would. The summary also shows the errors with the
calibration fitted on every cell (in-sample).

    sudo .venv/bin/python bench/predict.py            # markdown table
    sudo .venv/bin/python bench/predict.py --json     # rows as JSON (the table goes to stderr)
    sudo .venv/bin/python bench/predict.py --stream multifd   # every move over 4 multifd
        # channels with zstd (`migrate --parallel 4 --compress zstd`), the ratio measured
    .venv/bin/python bench/predict.py --replay sqlite:////tmp/.../vmferry.db   # no lab: the
        # stored inputs of an earlier run predicted again by the current model

The run prints where its store is; --replay re-evaluates a changed model on the same measured
inputs and outcomes.

Takes about 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

MIB = 2**20
MEMORY_MB = (256, 512)
DIRTY_SHARES = (0.0, 0.1, 0.3)
LINKS_MBPS = (400, 200)


@dataclass
class Row:
    link_mbps: int
    memory_mb: int
    dirty_mb_s: int
    status: str
    calibration_jobs: int
    predicted_converges: bool | None
    predicted_total_ms: int | None
    actual_total_ms: int | None
    predicted_downtime_ms: int | None
    actual_downtime_ms: int | None
    predicted_bytes: int | None
    actual_bytes: int | None
    refit_total_ms: int | None = None  # with the calibration fitted on every cell
    refit_downtime_ms: int | None = None
    predicted_pause_ms: int | None = None  # the guest's pause (vmferry's guest_pause_ms)
    actual_pause_ms: int | None = None
    refit_pause_ms: int | None = None
    channels: int = 1
    compression_ratio: float = 1.0  # as measured before the move (zstd), else 1
    qemu_version: str | None = None  # kvm1's, as libvirt reports it
    libvirt_version: str | None = None

    @property
    def total_error(self) -> float | None:
        return _rel(self.predicted_total_ms, self.actual_total_ms)

    @property
    def downtime_error_ms(self) -> int | None:
        return _abs(self.predicted_downtime_ms, self.actual_downtime_ms)

    @property
    def pause_error_ms(self) -> int | None:
        return _abs(self.predicted_pause_ms, self.actual_pause_ms)


def _abs(predicted: int | None, actual: int | None) -> int | None:
    return None if predicted is None or actual is None else abs(predicted - actual)


def _rel(predicted: int | None, actual: int | None) -> float | None:
    if predicted is None or not actual:
        return None
    return abs(predicted - actual) / actual


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run_cell(link_mbps: int, memory_mb: int, share: float, index: int, multifd: bool) -> Row:
    from vmferry.lab import guests
    from vmferry.model.migration import Compression, MigrationOptions
    from vmferry.service.migrate import migrate
    from vmferry.store import open_store

    dirty = round(share * link_mbps * 1_000_000 / 8 / MIB)
    name = f"pb{index}"
    guests.create_guest(
        name, "kvm1", memory_mb=memory_mb, working_set_mb=memory_mb // 2, dirty_mb_s=dirty
    )
    try:
        time.sleep(3)  # let the workload settle at its rate
        options = MigrationOptions(timeout_s=180)
        if multifd:
            options = MigrationOptions(timeout_s=180, parallel=4, compression=Compression.ZSTD)
        outcome = migrate(name, "kvm2", options)
        result = outcome.result
        record = open_store().get_prediction(result.job_id)
        predicted = record.predicted if record is not None else {}
        model_inputs = predicted.get("model_inputs", {})
        row = Row(
            link_mbps=link_mbps,
            memory_mb=memory_mb,
            dirty_mb_s=dirty,
            status=str(result.status),
            calibration_jobs=int(predicted.get("calibration", {}).get("jobs", 0)),
            predicted_converges=predicted.get("converges"),
            predicted_total_ms=predicted.get("total_time_ms"),
            actual_total_ms=result.total_time_ms,
            predicted_downtime_ms=predicted.get("downtime_ms"),
            actual_downtime_ms=result.downtime_ms,
            predicted_bytes=predicted.get("transferred_bytes"),
            actual_bytes=result.transferred_bytes,
            predicted_pause_ms=predicted.get("guest_pause_ms"),
            actual_pause_ms=result.guest_pause_ms,
            channels=int(model_inputs.get("channels", 1)),
            compression_ratio=float(model_inputs.get("compression_ratio", 1.0)),
        )
    finally:
        guests.delete_guest(name)
    progress(f"cell {index}: {asdict(row)}")
    return row


def _stack() -> tuple[str | None, str | None]:
    """kvm1's QEMU and libvirt versions, as libvirt reports them."""
    from vmferry.drivers.libvirt_host import LibvirtHost
    from vmferry.store import open_store

    host = open_store().get_host("kvm1")
    with LibvirtHost.connect(host.name, host.uri) as conn:
        info = conn.info()
    return info.hypervisor_version, info.libvirt_version


def refit(rows: list[Row]) -> None:
    """Predict every cell again from its stored inputs with the calibration of all cells."""
    from vmferry.predict.model import PredictInputs, predict
    from vmferry.service.predict import calibration_from_store
    from vmferry.store import open_store

    store = open_store()
    cal = calibration_from_store(store)
    records = sorted(store.list_predictions(), key=lambda r: r.created_at)
    for row, record in zip(rows, records, strict=False):
        p = predict(PredictInputs(**record.predicted["model_inputs"]), cal)
        row.refit_total_ms, row.refit_downtime_ms = p.total_time_ms, p.downtime_ms
        row.refit_pause_ms = p.guest_pause_ms
    progress(f"calibration fitted on all cells: {cal}")


def replay(db_url: str) -> list[Row]:
    """Predict every stored job again with the current model, each from its stored inputs and
    a calibration fitted on the jobs before it (as the run itself would have)."""
    from vmferry.predict.model import PredictInputs, predict
    from vmferry.service.predict import calibration_from_store
    from vmferry.store import open_store

    store = open_store(db_url)
    records = sorted(store.list_predictions(), key=lambda r: r.created_at)
    rows = []
    for index, record in enumerate(records):
        scratch = _store_with(records[:index])
        cal = calibration_from_store(scratch)
        inputs = PredictInputs(**record.predicted["model_inputs"])
        p = predict(inputs, cal)
        actual = record.actual or {}
        moved = actual.get("moved", actual.get("status") == "completed")
        rows.append(Row(
            link_mbps=round(inputs.link_bytes_s * 8 / 1e6), memory_mb=inputs.memory_bytes // MIB,
            dirty_mb_s=round(inputs.dirty_rate_bytes_s / MIB), status=str(actual.get("status")),
            calibration_jobs=cal.jobs, predicted_converges=p.converges,
            predicted_total_ms=p.total_time_ms,
            actual_total_ms=actual.get("total_time_ms") if moved else None,
            predicted_downtime_ms=p.downtime_ms, actual_downtime_ms=actual.get("downtime_ms"),
            predicted_bytes=p.transferred_bytes, actual_bytes=actual.get("transferred_bytes"),
            predicted_pause_ms=p.guest_pause_ms, actual_pause_ms=actual.get("guest_pause_ms"),
            channels=inputs.channels, compression_ratio=inputs.compression_ratio,
        ))  # fmt: skip
    return rows


def _store_with(records: list[Any]) -> Any:
    """A scratch in-memory store holding just these predictions (for the calibration)."""
    from vmferry.model.migration import MigrationOptions
    from vmferry.store import open_store

    scratch = open_store("sqlite://")
    for r in records:
        job = scratch.create_job("migrate", r.vm, r.source, r.destination, MigrationOptions())
        scratch.save_prediction(job.id, r.vm, r.source, r.destination, r.predicted)
        scratch.record_actual(job.id, r.actual or {})
    return scratch


def summary(rows: list[Row], refitted: bool = False) -> str:
    total, down, pause = [], [], []
    for r in rows:
        if r.actual_total_ms is None:  # did not move (a verification failure still moved)
            continue
        if refitted:
            t = _rel(r.refit_total_ms, r.actual_total_ms)
            d = _abs(r.refit_downtime_ms, r.actual_downtime_ms)
            g = _abs(r.refit_pause_ms, r.actual_pause_ms)
        else:
            t, d, g = r.total_error, r.downtime_error_ms, r.pause_error_ms
        if t is not None:
            total.append(t)
        if d is not None:
            down.append(float(d))
        if g is not None:
            pause.append(float(g))
    from vmferry.predict.model import percentile

    def fmt(values: list[float], pct: bool) -> str:
        if not values:
            return "-"
        mean, p90 = sum(values) / len(values), percentile(values, 0.9)
        return f"mean {mean:.1%}, P90 {p90:.1%}" if pct else f"mean {mean:.0f} ms, P90 {p90:.0f} ms"

    which = "calibration fitted on all cells (in-sample)" if refitted else "as predicted"
    return (
        f"{which}: total-time error {fmt(total, True)}; guest pause abs error "
        f"{fmt(pause, False)}; libvirt downtime abs error {fmt(down, False)} "
        f"({len(total)} cells that moved)"
    )


def table(rows: list[Row]) -> str:
    def ms(v: int | None) -> str:
        return "-" if v is None else f"{v / 1000:.1f} s"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    lines = [
        "| link | memory | dirty | zstd ratio | status | cal. jobs | converges (pred.) | "
        "total pred. | total actual | error | pause pred. | pause actual | downtime pred. | "
        "downtime actual | MiB pred. | MiB actual |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mib_p = "-" if r.predicted_bytes is None else f"{r.predicted_bytes / MIB:.0f}"
        mib_a = "-" if r.actual_bytes is None else f"{r.actual_bytes / MIB:.0f}"
        ratio = "-" if r.channels < 2 else f"{r.compression_ratio:.2f}"
        lines.append(
            f"| {r.link_mbps} Mbit/s | {r.memory_mb} MiB | {r.dirty_mb_s} MiB/s | {ratio} | "
            f"{r.status} | {r.calibration_jobs} | {r.predicted_converges} | "
            f"{ms(r.predicted_total_ms)} | {ms(r.actual_total_ms)} | {pct(r.total_error)} | "
            f"{r.predicted_pause_ms} ms | {r.actual_pause_ms} ms | {r.predicted_downtime_ms} ms | "
            f"{r.actual_downtime_ms} ms | {mib_p} | {mib_a} |"
        )
    stacks = sorted({f"QEMU {r.qemu_version}, libvirt {r.libvirt_version}" for r in rows
                     if r.qemu_version})  # fmt: skip
    return "\n".join([*lines, "", *stacks, summary(rows), summary(rows, refitted=True)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument(
        "--stream", choices=("single", "multifd"), default="single",
        help="multifd: every move over 4 channels with zstd (the default: the single stream)",
    )  # fmt: skip
    parser.add_argument(
        "--replay",
        metavar="DB_URL",
        help="no lab: predict the jobs stored in "
        "DB_URL (an earlier run's store) again with the current model",
    )
    args = parser.parse_args()
    if args.replay:
        rows = replay(args.replay)
        sys.stderr.write(table(rows) + "\n")
        print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else table(rows))
        return 0
    if os.geteuid() != 0:
        progress("bench/predict.py needs root (it builds the lab)")
        return 2
    workdir = tempfile.mkdtemp(prefix="vmferry-bench-predict-")
    os.environ["VMFERRY_DB"] = f"sqlite:///{workdir}/vmferry.db"  # a fresh store
    progress(f"store: {os.environ['VMFERRY_DB']} (for --replay)")
    from vmferry.lab import lifecycle
    from vmferry.lab.lock import lab_turn

    rows: list[Row] = []
    index = 0
    with lab_turn():
        for link in LINKS_MBPS:
            lifecycle.up(2, link, progress=progress)
            try:
                stack = _stack()
                for memory in MEMORY_MB:
                    for share in DIRTY_SHARES:
                        index += 1
                        try:
                            row = run_cell(link, memory, share, index, args.stream == "multifd")
                        except Exception as exc:  # one failed cell must not end the run
                            progress(f"cell {index} failed: {type(exc).__name__}: {exc}")
                            continue
                        row.qemu_version, row.libvirt_version = stack
                        rows.append(row)
            finally:
                lifecycle.down()
    refit(rows)
    sys.stderr.write(table(rows) + "\n")
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
