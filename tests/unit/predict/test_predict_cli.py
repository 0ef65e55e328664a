"""`vmferry predict` / `vmferry profile` as a user meets them: JSON shape, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.cli import vmferry as run_vmferry
from typer.testing import CliRunner

from vmferry.cli import predict_cmd, profile_cmd
from vmferry.cli.main import app
from vmferry.model.migration import Compression
from vmferry.model.workload import ProfileSample
from vmferry.predict.model import DEFAULT_CALIBRATION, Calibration, PredictInputs, predict
from vmferry.predict.profile import summarise
from vmferry.service.predict import PredictReport
from vmferry.service.profile import ProfileRun

MIB = 2**20
INPUT_KEYS = {"memory_bytes", "dirty_rate_bytes_s", "link_bytes_s", "zero_fraction",
              "downtime_limit_ms", "channels", "compression_ratio"}  # fmt: skip
PREDICT_KEYS = {"vm", "destination", "converges", "total_time_ms", "guest_pause_ms",
                "downtime_ms", "transferred_bytes", "inputs"}  # fmt: skip


def vmferry(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return run_vmferry(*args, db=db, env={"VMFERRY_LAB_DIR": str(db.parent)})


def fake_report() -> PredictReport:
    inputs = PredictInputs(memory_bytes=512 * MIB, dirty_rate_bytes_s=3.5 * MIB,
                           link_bytes_s=50e6, zero_fraction=0.31, downtime_limit_ms=300,
                           working_set_bytes=300 * MIB)  # fmt: skip
    return PredictReport("web1", "kvm1", "kvm2", predict(inputs, Calibration()),
                         {"dirty_rate_bytes_s": "test"})  # fmt: skip


def test_predict_json_is_the_documented_document(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(vm: str, to: str, **kw: object) -> PredictReport:
        seen.update(kw, vm=vm, to=to)
        return fake_report()

    monkeypatch.setattr(predict_cmd, "predict_migration", fake)
    done = CliRunner().invoke(app, ["predict", "web1", "--to", "kvm2", "--json",
                                    "--max-downtime-ms", "500"])  # fmt: skip
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert set(doc) == PREDICT_KEYS and set(doc["inputs"]) == INPUT_KEYS
    assert (doc["vm"], doc["destination"], doc["converges"]) == ("web1", "kvm2", True)
    assert doc["inputs"]["memory_bytes"] == 512 * MIB and doc["inputs"]["zero_fraction"] == 0.31
    assert isinstance(doc["total_time_ms"], int) and doc["total_time_ms"] > 0
    # libvirt's figure is the guest's pause and the control path after it
    assert doc["downtime_ms"] == doc["guest_pause_ms"] + DEFAULT_CALIBRATION.report_lag_ms
    assert seen == {"vm": "web1", "to": "kvm2", "max_downtime_ms": 500, "bandwidth_mib_s": None,
                    "parallel": 0, "compression": Compression.NONE}  # fmt: skip


def test_predict_takes_the_moves_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(vm: str, to: str, **kw: object) -> PredictReport:
        seen.update(kw)
        return fake_report()

    monkeypatch.setattr(predict_cmd, "predict_migration", fake)
    done = CliRunner().invoke(app, ["predict", "web1", "--to", "kvm2", "--parallel", "4",
                                    "--compress", "zstd"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (seen["parallel"], seen["compression"]) == (4, Compression.ZSTD)
    assert "guest pause" in done.stdout and "as libvirt will report it" in done.stdout


def test_zstd_without_channels_is_refused_before_anything_is_measured(tmp_path: Path) -> None:
    done = vmferry("predict", "web1", "--to", "kvm2", "--compress", "zstd", db=tmp_path / "c.db")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "vmferry: --compress zstd compresses multifd channels: give --parallel 2 or more"
    ]
    assert not (tmp_path / "c.db").exists()


def test_predict_table_names_a_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict_cmd, "predict_migration", lambda *a, **k: fake_report())
    done = CliRunner().invoke(app, ["predict", "web1", "--to", "kvm2"])
    assert done.exit_code == 0, done.output
    assert "strategy" in done.stdout and "live" in done.stdout


def test_profile_json_for_one_vm_and_for_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = tuple(ProfileSample("web1", "kvm1", f"2026-11-22T10:00:0{i}.000Z",
                                  {"cpu_share": 0.4, "memory_used_bytes": 100 * MIB})
                    for i in range(3))  # fmt: skip
    run = ProfileRun("web1", "kvm1", samples, summarise("web1", "kvm1", samples, 2, 512 * MIB))
    monkeypatch.setattr(profile_cmd, "profile_service", lambda *a, **k: [run, run])
    one = CliRunner().invoke(app, ["profile", "web1", "--duration", "3", "--json"])
    assert one.exit_code == 0, one.output
    doc = json.loads(one.stdout)
    assert doc["vm"] == "web1" and doc["samples"] == 3 and doc["interrupted"] is False
    assert doc["stats"]["cpu_share"]["p95"] == pytest.approx(0.4)
    assert doc["rightsizing"]["recommended_vcpus"] == 1
    assert set(doc["rightsizing"]) >= {"oversized", "overutilised", "reason"}
    many = CliRunner().invoke(app, ["profile", "--host", "kvm1", "--json"])
    assert many.exit_code == 0, many.output
    assert [d["vm"] for d in json.loads(many.stdout)] == ["web1", "web1"]


@pytest.mark.parametrize(
    "args",
    [("predict", "nope", "--to", "kvm9"), ("profile", "nope"), ("profile", "--host", "kvm9"),
     ("profile",), ("profile", "web1", "--interval", "0")],
)  # fmt: skip
def test_unknown_vm_or_host_or_bad_options_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = vmferry(*args, db=tmp_path / "cli.db")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmferry: "), done.stderr
