"""Profile samples: libvirt counters to rates (pure), summaries, and the store round trip."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from vmferry.drivers.libvirt_stats import counters_from_stats, rates
from vmferry.errors import NotFoundError
from vmferry.model.migration import MigrationOptions
from vmferry.model.workload import ProfileSample
from vmferry.predict.model import DEFAULT_CALIBRATION, Calibration, PredictInputs, predict
from vmferry.predict.profile import summarise
from vmferry.service.predict import calibration_from_store
from vmferry.store import Store

MIB = 2**20


def stats(cpu_s: float, rd: int, pkts: int, unused_kib: int = 100 * 1024) -> dict[str, Any]:
    return {"vcpu.current": 2, "vcpu.0.time": int(cpu_s * 1e9 / 2),
            "vcpu.1.time": int(cpu_s * 1e9 / 2), "cpu.time": int(cpu_s * 2e9),
            "balloon.current": 512 * 1024, "balloon.available": 480 * 1024,
            "balloon.unused": unused_kib, "block.count": 2, "block.0.rd.bytes": rd,
            "block.0.rd.reqs": rd // 4096, "block.1.rd.bytes": rd, "block.0.wr.bytes": 0,
            "net.count": 1, "net.0.rx.bytes": pkts * 100, "net.0.rx.pkts": pkts,
            "net.0.tx.bytes": 0, "net.0.tx.pkts": 0}  # fmt: skip


def test_counters_prefer_the_vcpu_time_and_sum_devices() -> None:
    c = counters_from_stats("web1", 10.0, stats(3.0, 4096, 10))
    assert (c.vcpus, c.cpu_ns) == (2, 3_000_000_000)  # not cpu.time (emulator threads too)
    assert c.memory_bytes == 512 * MIB and c.unused_bytes == 100 * MIB
    assert c.disk_read_bytes == 8192 and c.disk_read_ops == 1
    assert c.net_rx_packets == 10


def test_counters_without_per_vcpu_times_use_the_total() -> None:
    raw = stats(3.0, 0, 0)
    del raw["vcpu.1.time"]
    assert counters_from_stats("web1", 0.0, raw).cpu_ns == 6_000_000_000


def test_rates_over_an_interval() -> None:
    before = counters_from_stats("web1", 10.0, stats(3.0, 0, 0))
    after = counters_from_stats("web1", 12.0, stats(4.0, 4 * MIB, 200))
    m = rates(before, after)
    assert m["cpu_share"] == pytest.approx(0.25)  # 1 s of CPU over 2 s on 2 vCPUs
    assert m["disk_read_bytes_s"] == pytest.approx(4 * MIB)  # 8 MiB over two disks, 2 s
    assert m["net_rx_packets_s"] == pytest.approx(100)
    assert m["memory_used_bytes"] == 380 * MIB
    assert m["dirty_rate_bytes_s"] is None


def test_counters_going_backwards_give_zero_and_time_must_advance() -> None:
    before = counters_from_stats("web1", 10.0, stats(9.0, 4 * MIB, 500))
    after = counters_from_stats("web1", 11.0, stats(1.0, 0, 0))
    assert rates(before, after)["cpu_share"] == 0
    assert rates(before, after)["disk_read_bytes_s"] == 0
    with pytest.raises(ValueError):
        rates(after, before)


def sample(i: int, cpu: float, used_mb: int, dirty: float | None = None) -> ProfileSample:
    return ProfileSample(vm="web1", host="kvm1", taken_at=f"2026-11-22T10:00:{i:02d}.000Z",
                         metrics={"cpu_share": cpu, "vcpus": 2, "memory_bytes": 1024 * MIB,
                                  "memory_used_bytes": used_mb * MIB,
                                  "memory_unused_bytes": (1024 - used_mb) * MIB,
                                  "dirty_rate_bytes_s": dirty})  # fmt: skip


def test_summary_stats_zero_share_and_rightsizing() -> None:
    samples = [sample(i, 0.1 * (i % 3), 200 + i, None if i % 2 else 4 * MIB) for i in range(20)]
    s = summarise("web1", "kvm1", samples, vcpus=2, memory_bytes=1024 * MIB)
    assert s.samples == 20
    assert s.first_at == samples[0].taken_at and s.last_at == samples[-1].taken_at
    assert s.stats["cpu_share"].max == pytest.approx(0.2)
    assert s.stats["dirty_rate_bytes_s"].mean == pytest.approx(4 * MIB)
    assert "disk_read_bytes_s" not in s.stats  # never sampled
    assert s.zero_fraction == pytest.approx((1024 - 219) / 1024)
    assert s.rightsizing.recommended_vcpus == 1


def test_summary_of_nothing() -> None:
    s = summarise("web1", "kvm1", [], vcpus=1, memory_bytes=512 * MIB)
    assert s.samples == 0 and s.stats == {} and s.zero_fraction is None


# -- store ------------------------------------------------------------------------------------


def test_profile_samples_round_trip(store: Store) -> None:
    samples = [sample(i, 0.5, 300, 1.5 * MIB) for i in range(5)]
    other = ProfileSample(vm="db1", host="kvm2", taken_at="2026-11-22T10:00:03.000Z",
                          metrics={"cpu_share": 1.0})  # fmt: skip
    store.add_profile_samples([*samples, other])
    store.add_profile_samples([])
    got = store.profile_samples("web1")
    assert got == samples  # oldest first, metrics as stored
    assert store.profile_samples("web1", since="2026-11-22T10:00:03Z") == samples[3:]
    assert store.profile_samples("web1", limit=2) == samples[3:]  # the newest two
    assert store.profile_samples("db1") == [other]
    assert store.delete_profile_samples("web1") == 5
    assert store.profile_samples("web1") == []


def test_a_prediction_is_kept_with_its_job_and_gets_the_actuals(store: Store) -> None:
    job = store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    assert store.get_prediction(job.id) is None
    predicted = {"vm": "web1", "converges": True, "total_time_ms": 8000,
                 "inputs": {"memory_bytes": 512 * MIB}}  # fmt: skip
    store.save_prediction(job.id, "web1", "kvm1", "kvm2", predicted)
    assert store.list_predictions() == []  # no actual figures yet
    record = store.get_prediction(job.id)
    assert record is not None and record.predicted == predicted and record.actual is None
    actual = {"status": "completed", "total_time_ms": 8400, "downtime_ms": 250}
    store.record_actual(job.id, actual)
    record = store.get_prediction(job.id)
    assert record is not None
    assert (record.predicted, record.actual) == (predicted, actual)
    assert [r.job_id for r in store.list_predictions()] == [job.id]
    assert [r.job_id for r in store.list_predictions(with_actual=False)] == [job.id]


def test_predictions_need_a_job(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.save_prediction("nosuchjob", "web1", "kvm1", "kvm2", {})
    with pytest.raises(NotFoundError):
        store.record_actual("nosuchjob", {})


def test_the_calibration_learns_the_switchover_from_the_measured_guest_pause(store: Store) -> None:
    """A job that measured the guest's pause calibrates the downtime with it, not with
    libvirt's figure; a job without one falls back to libvirt's."""
    inputs = PredictInputs(memory_bytes=512 * MIB, dirty_rate_bytes_s=0.0,
                           link_bytes_s=50 * MIB, zero_fraction=0.5)  # fmt: skip
    neutral = predict(inputs, Calibration(efficiency=1.0, setup_ms=0, switchover_ms=0,
                                          bytes_factor=1.0))  # fmt: skip
    final = neutral.guest_pause_ms
    for i, (pause, downtime) in enumerate([(300, 200), (320, 210), (None, 340)]):
        job = store.create_job("migrate", f"vm{i}", "kvm1", "kvm2", MigrationOptions())
        store.save_prediction(job.id, f"vm{i}", "kvm1", "kvm2",
                              {"model_inputs": asdict(inputs)})  # fmt: skip
        store.record_actual(job.id, {"status": "completed", "moved": True,
                                     "total_time_ms": 6000, "transferred_bytes": 260 * MIB,
                                     "downtime_ms": downtime, "guest_pause_ms": pause})  # fmt: skip
    fitted = calibration_from_store(store)
    assert fitted.jobs == 3
    assert final == 0  # an idle guest: nothing left for the last pass, the switchover is all
    # the job without a pause counts libvirt's figure less the report lag (its default:
    # two jobs measured both, fewer than a fit needs)
    lag = DEFAULT_CALIBRATION.report_lag_ms
    assert fitted.report_lag_ms == lag
    assert fitted.switchover_ms == pytest.approx((300 + 320 + 340 - lag) / 3)
