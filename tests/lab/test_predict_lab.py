"""`vmferry profile` and `vmferry predict` against the real lab, then a migration that keeps
its prediction beside the actual figures in the store."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from support.lab_fleet import vmferry

from vmferry.lab.state import GuestRecord, LabState
from vmferry.store import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

INPUT_KEYS = {"memory_bytes", "dirty_rate_bytes_s", "link_bytes_s", "zero_fraction",
              "downtime_limit_ms", "channels", "compression_ratio"}  # fmt: skip


def test_profile_predict_and_migrate_keep_prediction_and_actuals(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    lab_guests("pr1", "kvm1", memory_mb=256, working_set_mb=96, dirty_mb_s=4)

    done = vmferry("profile", "pr1", "--duration", "4", "--interval", "1", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["vm"], doc["host"]) == ("pr1", "kvm1")
    assert doc["samples"] >= 3
    assert doc["stats"]["cpu_share"]["max"] > 0  # the workload burns CPU
    assert 0 < doc["zero_fraction"] < 1  # the balloon driver reports unused memory
    stored = open_store().profile_samples("pr1")
    assert len(stored) == doc["samples"]
    assert any((s.get("dirty_rate_bytes_s") or 0) > 0 for s in stored)

    done = vmferry("predict", "pr1", "--to", "kvm2", "--json")
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout)
    assert set(predicted["inputs"]) == INPUT_KEYS
    assert predicted["inputs"]["memory_bytes"] == 256 * 2**20
    assert predicted["inputs"]["link_bytes_s"] == 400_000_000 // 8  # the lab's link
    assert predicted["converges"] is True
    assert predicted["total_time_ms"] > 0 and predicted["transferred_bytes"] > 96 * 2**20
    assert predicted["downtime_ms"] > predicted["guest_pause_ms"] > 0
    assert (predicted["inputs"]["channels"], predicted["inputs"]["compression_ratio"]) == (1, 1)

    # over multifd with zstd: the ratio is measured on the guest's memory (read through
    # libvirt over TLS), and fewer bytes are predicted
    done = vmferry("predict", "pr1", "--to", "kvm2", "--parallel", "4", "--compress", "zstd",
                   "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    zstd = json.loads(done.stdout)
    assert zstd["inputs"]["channels"] == 4
    assert 0.05 < zstd["inputs"]["compression_ratio"] < 0.95  # the workload's pages compress
    assert zstd["transferred_bytes"] < predicted["transferred_bytes"]

    done = vmferry("migrate", "pr1", "--to", "kvm2", "--json")
    result = json.loads(done.stdout)
    record = open_store().get_prediction(result["job_id"])
    assert record is not None, done.stderr
    assert (record.vm, record.source, record.destination) == ("pr1", "kvm1", "kvm2")
    assert record.predicted["converges"] is True and record.predicted["total_time_ms"] > 0
    assert record.actual is not None
    assert record.actual["status"] == result["status"]
    assert record.actual["total_time_ms"] == result["total_time_ms"]
    assert record.actual["downtime_ms"] == result["downtime_ms"]
    job = json.loads(vmferry("job", "show", result["job_id"], "--json").stdout)
    assert "prediction" in [e["kind"] for e in job["events"]]


def test_unknown_vm_is_bad_input(lab: LabState) -> None:
    assert vmferry("predict", "nope", "--to", "kvm2").returncode == 2
    assert vmferry("profile", "nope", "--duration", "1").returncode == 2
