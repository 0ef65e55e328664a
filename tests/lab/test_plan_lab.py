"""A wave plan of three lab guests with different dirty rates: predicted, run through the
engine, compared, drawn; then a resumed plan that skips an item already completed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from vmferry.lab import guests
from vmferry.lab.state import GuestRecord, LabState
from vmferry.model.plan_run import ItemStatus
from vmferry.store import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

DIRTY_MB_S = {"pw1": 0, "pw2": 6, "pw3": 16}


def vmferry(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=os.environ,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def plan_file(path: Path, moves: dict[str, tuple[str, str]], *, slots: int = 1,
              budget_gbps: float | None = None, memory_mb: int = 256) -> Path:  # fmt: skip
    """Hosts on the lab's 400 Mbit/s links, ``slots`` migrations at a time on each."""
    lines = ["version: 1", "name: lab-waves", "defaults: {wave_slice_s: 30}"]
    if budget_gbps is not None:
        lines.append(f"fleet: {{bandwidth_budget_gbps: {budget_gbps}}}")
    lines.append("hosts:")
    for host in ("kvm1", "kvm2"):
        lines.append(f"  - {{name: {host}, cpus: 16, memory_mb: 8192, link_gbps: 0.4, "
                     f"max_concurrent: {slots}}}")  # fmt: skip
    lines.append("vms:")
    for vm, (src, dst) in moves.items():
        lines.append(f"  - {{name: {vm}, source: {src}, destination: {dst}, "
                     f"memory_mb: {memory_mb}, vcpus: 1, max_downtime_ms: 500}}")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plan_create_run_show_and_resume(
    lab: LabState, tmp_path: Path, lab_guests: Callable[..., GuestRecord]
) -> None:
    for vm, rate in DIRTY_MB_S.items():
        lab_guests(vm, "kvm1", memory_mb=256, working_set_mb=96, dirty_mb_s=rate)
    there = {vm: ("kvm1", "kvm2") for vm in DIRTY_MB_S}

    done = vmferry("plan", "create", str(plan_file(tmp_path / "plan.yaml", there)), "--json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    plan_id = created["id"]
    assert created["status"] == "pending"
    assert created["makespan_s"] >= created["lower_bound_s"] > 0
    by_vm = {i["vm"]: i for i in created["items"]}
    assert set(by_vm) == set(DIRTY_MB_S)
    for vm, item in by_vm.items():
        model = item["predicted"]["model"]
        assert model["measured"] is True, (vm, model)
        assert model["inputs"]["memory_bytes"] == 256 * 2**20
        assert item["predicted"]["duration_s"] > 0
        assert item["strategy"] in ("live", "postcopy") and item["strategy_reason"]
    dirtiest = by_vm["pw3"]["predicted"]["model"]["inputs"]["dirty_rate_bytes_s"]
    assert dirtiest > by_vm["pw1"]["predicted"]["model"]["inputs"]["dirty_rate_bytes_s"]

    done = vmferry("plan", "run", plan_id, "--json")
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout)
    assert ran["status"] == "completed"
    assert all(i["status"] == "completed" and i["job_id"] for i in ran["items"])
    assert {guests.get_guest(vm).host for vm in DIRTY_MB_S} == {"kvm2"}

    gantt = tmp_path / "plan.html"
    done = vmferry("plan", "show", plan_id, "--json", "--gantt", str(gantt))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    for item in shown["items"]:
        assert item["predicted"]["end_s"] > item["predicted"]["start_s"]
        actual = item["actual"]
        assert actual["end_s"] > actual["start_s"] >= 0
        assert actual["total_time_ms"] > 0 and actual["downtime_ms"] is not None
    html = gantt.read_text()
    assert html.count('class="bar actual"') == len(DIRTY_MB_S)
    assert html.count('class="bar predicted"') == len(DIRTY_MB_S)
    for vm in DIRTY_MB_S:
        assert f'data-vm="{vm}"' in html

    # resume: a plan back to kvm1 whose first item the store already has as completed
    back = {vm: ("kvm2", "kvm1") for vm in ("pw1", "pw2")}
    done = vmferry("plan", "create", str(plan_file(tmp_path / "back.yaml", back)), "--json")
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)["id"]
    with open_store() as store:
        first = store.get_plan(second).items[0]
        store.save_plan_item(second, replace(first, status=ItemStatus.COMPLETED))
    done = vmferry("plan", "resume", second, "--json")
    assert done.returncode == 0, done.stderr
    resumed = {i["vm"]: i for i in json.loads(done.stdout)["items"]}
    skipped, moved = resumed[first.vm], next(i for v, i in resumed.items() if v != first.vm)
    assert skipped["status"] == "completed" and skipped["job_id"] is None
    assert skipped["attempts"] == 0 and skipped["actual"] is None
    assert moved["status"] == "completed" and moved["job_id"]
    assert guests.get_guest(first.vm).host == "kvm2"  # never moved
    assert guests.get_guest(moved["vm"]).host == "kvm1"


def test_a_fleet_budget_caps_the_migrations_and_runs_them_one_after_the_other(
    lab: LabState, tmp_path: Path, lab_guests: Callable[..., GuestRecord]
) -> None:
    """Two slots per host but a 100 Mbit/s fleet budget: each migration gets 100 Mbit/s
    (11 MiB/s, capped in libvirt), so only one runs at a time. (Small guests: at 11 MiB/s
    each megabyte is a tenth of a second of the suite.)"""
    moves = {vm: ("kvm1", "kvm2") for vm in ("pb1", "pb2")}
    for vm in moves:
        lab_guests(vm, "kvm1", memory_mb=128, working_set_mb=32, dirty_mb_s=0)
    path = plan_file(tmp_path / "budget.yaml", moves, slots=2, budget_gbps=0.1, memory_mb=128)
    done = vmferry("plan", "create", str(path), "--json")
    assert done.returncode == 0, done.stderr
    plan_id = json.loads(done.stdout)["id"]
    with open_store() as store:
        planned = store.get_plan(plan_id).schedule["migrations"]
    assert [m["bandwidth_mbps"] for m in planned] == [100, 100]

    done = vmferry("plan", "run", plan_id, "--json")
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout)
    assert ran["status"] == "completed", ran
    with open_store() as store:
        items = sorted(store.get_plan(plan_id).items, key=lambda i: i.started_at or "")
        jobs = [store.get_job(i.job_id or "") for i in items]
    assert [j.options.bandwidth_mib_s for j in jobs] == [11, 11]
    first, second = items
    assert first.finished_at is not None and second.started_at is not None
    assert second.started_at >= first.finished_at  # the budget held the second back
    for job in jobs:  # and libvirt held each to its cap
        result = job.result
        assert result is not None and result.total_time_ms and result.transferred_bytes
        rate = result.transferred_bytes / (result.total_time_ms / 1000)
        print(f"[plan-budget] {job.vm}: {rate / 2**20:.1f} MiB/s over {result.total_time_ms} ms")
        assert rate <= 1.15 * 11 * 2**20, rate
