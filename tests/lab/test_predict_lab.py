"""`vmferry profile` and `vmferry predict` against the real lab, then a migration that keeps
its prediction beside the actual figures in the store."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from support.lab_fleet import answers, lab_power, runs_on, vmferry

from vmferry.lab import client
from vmferry.lab.state import GuestRecord, LabState
from vmferry.store import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

INPUT_KEYS = {"memory_bytes", "dirty_rate_bytes_s", "link_bytes_s", "zero_fraction",
              "downtime_limit_ms"}  # fmt: skip


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


def test_balance_moves_load_off_the_busy_host_through_a_plan(
    lab: LabState, lab_guests: Callable[..., GuestRecord], tmp_path: Path
) -> None:
    """Two busy guests on kvm1, none on kvm2: profiled, `vmferry balance` recommends moving
    one to kvm2 and writes it as a plan file; `vmferry watch --balance`, measuring the
    guests itself, waits the rounds it must and carries that move out as a plan; then
    `balance --apply` finds nothing to apply."""
    for name in ("bl1", "bl2"):
        lab_guests(name, "kvm1", memory_mb=256, working_set_mb=96, dirty_mb_s=16)
    profiled = vmferry("profile", "--host", "kvm1", "--duration", "4", "--interval", "1",
                       "--json")  # fmt: skip
    assert profiled.returncode == 0, profiled.stderr
    cpu = {r["vm"]: r["stats"]["cpu_share"]["p95"] for r in json.loads(profiled.stdout)}
    plan_file = tmp_path / "moves.yaml"
    first = vmferry("balance", "--metric", "cpu", "--threshold", "0.05", "--json",
                    "--plan-out", str(plan_file))  # fmt: skip
    assert first.returncode == 0, first.stderr
    rec = json.loads(first.stdout)
    loads = {h["name"]: h["load"] for h in rec["hosts"]}
    print(f"\nCPU p95 {cpu}; loads {loads}; imbalance {rec['imbalance_before']:.3f} -> "
          f"{rec['imbalance_after']:.3f}; moves {rec['moves']}")  # fmt: skip
    assert rec["counted_at_size"] == [] and loads["kvm2"] == 0 < loads["kvm1"]
    assert rec["imbalance_before"] > 0.05, rec  # both guests burn CPU (asserted above)
    assert [(m["source"], m["destination"]) for m in rec["moves"]] == [("kvm1", "kvm2")]
    moved = rec["moves"][0]["vm"]
    assert moved in plan_file.read_text()  # `plan create` takes it (tests/unit/fleetops)
    watched = vmferry("watch", "--balance", "--metric", "cpu", "--threshold", "0.05",
                      "--persist", "2", "--rounds", "3", "--interval", "2", "--timeout", "5",
                      timeout=600)  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    print(f"watch --balance: {lines}")
    assert lines[0] == "balance: waiting for samples of bl1, bl2", lines  # round 1: counters
    assert lines[1].endswith("(1 of 2 rounds)"), lines  # the guests' own load, measured live
    assert lines[2].endswith("for 2 rounds: balancing"), lines
    ran = re.match(r"balance: plan \S+ completed: (bl[12]) kvm1->kvm2; imbalance ", lines[3])
    assert ran is not None and len(lines) == 4, lines
    moved = ran.group(1)  # the live figures may pick the other guest: they are alike
    where = json.loads(vmferry("inventory", "--json").stdout)
    assert {v["spec"]["name"]: v["host"] for v in where if v["spec"]["name"] in cpu} == {
        moved: "kvm2", ({"bl1", "bl2"} - {moved}).pop(): "kvm1"}  # fmt: skip
    again = vmferry("balance", "--metric", "cpu", "--threshold", "0.05", "--apply", "--json")
    assert again.returncode == 0, again.stderr
    assert "nothing to apply" in again.stderr
    doc = json.loads(again.stdout)
    print(f"after: imbalance {doc['imbalance_before']:.3f} ({doc['stop']})")
    # one busy guest per host: nothing to move, whether the p95s (which include the samples
    # taken while a guest moved) put the fleet under 0.05 or a little over it
    assert doc["moves"] == [] and doc["plan_id"] is None, doc
    assert doc["stop"] in ("under the threshold", "no allowed move lowers the imbalance"), doc
    assert doc["imbalance_before"] < rec["imbalance_before"] / 2, (doc, rec)


def test_maintenance_empties_a_host_and_keeps_vms_off_it_until_exit(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """`vmferry host maintenance enter kvm1` moves its guests to kvm2 through a plan, marks it;
    a move to it is then blocked until `maintenance exit`."""
    for name in ("mt1", "mt2"):
        lab_guests(name, "kvm1", memory_mb=256, working_set_mb=64)
    unprofiled = vmferry("host", "maintenance", "enter", "kvm1", "--dry-run", "--json")
    assert sorted(json.loads(unprofiled.stdout)["counted_at_size"]) == ["mt1", "mt2"]
    # each counts at one busy vCPU then: a 2-CPU kvm2 cannot take both within 20 % headroom
    profiled = vmferry("profile", "--host", "kvm1", "--duration", "3", "--interval", "1")
    assert profiled.returncode == 0, profiled.stderr
    dry = vmferry("host", "maintenance", "enter", "kvm1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["counted_at_size"] == []
    assert sorted((m["vm"], m["destination"]) for m in planned["moves"]) == [
        ("mt1", "kvm2"), ("mt2", "kvm2")]  # fmt: skip
    assert planned["state"] is None  # a dry run marks nothing
    done = vmferry("host", "maintenance", "enter", "kvm1", "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["state"], outcome["plan_status"], outcome["stuck"]) == (
        "in-maintenance", "completed", [])  # fmt: skip
    where = json.loads(vmferry("inventory", "--json").stdout)
    assert {v["spec"]["name"]: v["host"] for v in where
            if v["spec"]["name"] in ("mt1", "mt2")} == {"mt1": "kvm2", "mt2": "kvm2"}  # fmt: skip
    try:
        back = vmferry("migrate", "mt1", "--to", "kvm1", "--json")
        assert back.returncode == 3, back.stderr
        check = json.loads(vmferry("check", "mt1", "--to", "kvm1", "--json").stdout)
        assert "host.maintenance" in [f["id"] for f in check["findings"]
                                      if f["severity"] == "blocker"]  # fmt: skip
        balance = json.loads(vmferry("balance", "--json").stdout)
        assert "kvm1" not in [h["name"] for h in balance["hosts"]]  # outside the metric
    finally:
        out = vmferry("host", "maintenance", "exit", "kvm1")
    assert out.returncode == 0 and out.stdout.strip() == "kvm1 is back in service"
    again = vmferry("check", "mt1", "--to", "kvm1", "--json")
    assert "host.maintenance" not in again.stdout


def test_consolidation_empties_a_host_powers_it_off_and_wakes_it(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """A quiet guest on each host, profiled: `vmferry consolidate --apply --power-off` moves
    one guest so one host runs both, puts the emptied host in standby and powers it off
    through the lab's power driver; `vmferry watch --power` leaves it off while the guests
    are quiet and wakes it, back into service, when they get busy (DPM's band, narrowed and
    with a short window for the test; `vmferry host wake` is the same service, by hand)."""
    guests = {
        "cn1": lab_guests("cn1", "kvm1", memory_mb=256, working_set_mb=16, dirty_mb_s=0),
        "cn2": lab_guests("cn2", "kvm2", memory_mb=256, working_set_mb=16, dirty_mb_s=0),
    }
    for host in ("kvm1", "kvm2"):
        assert vmferry(*lab_power(host)).returncode == 0
        profiled = vmferry("profile", "--host", host, "--duration", "4", "--interval", "1")
        assert profiled.returncode == 0, profiled.stderr
    freed: list[str] = []
    try:
        done = vmferry("consolidate", "--apply", "--power-off", "--json", timeout=900)
        doc = json.loads(done.stdout) if done.stdout else {}
        assert done.returncode == 0, (done.stderr, doc)
        freed = doc["hosts_freed"]
        assert len(freed) == 1 and len(doc["moves"]) == 1, doc
        (kept,) = {"kvm1", "kvm2"} - set(freed)
        assert doc["plan_status"] == "completed"
        assert doc["standby"] == [{"host": freed[0], "powered_off": True,
                                   "why": "empty, powered off"}]  # fmt: skip
        assert vmferry("lab", "host", "power", freed[0], "status").stdout.strip() == "off"
        for guest in guests.values():
            answers(guest.address, within_s=30)
        assert runs_on("cn1") == runs_on("cn2") == [kept]
        held = json.loads(vmferry("host", "maintenance", "status", "--json").stdout)
        assert [(h["host"], h["state"]) for h in held] == [(freed[0], "standby")]
        dpm = ["watch", "--power", "--target", "40", "--tolerance", "10", "--power-on-window",
               "4", "--power-off-window", "3600", "--interval", "2", "--timeout", "3"]  # fmt: skip
        quiet = vmferry(*dpm, "--rounds", "2")
        assert quiet.returncode == 0, quiet.stderr
        print(f"quiet: {quiet.stdout.splitlines()}")
        assert "awake" not in quiet.stdout and "power:" in quiet.stdout, quiet.stdout
        for guest in guests.values():  # each guest's vCPU about 80 % busy: demand rises
            assert client.control(guest.address, "rate 8").startswith("ok rate 8")
        woken = vmferry(*dpm, "--rounds", "2", timeout=400)
        assert woken.returncode == 0, woken.stderr
        lines = woken.stdout.splitlines()
        print(f"busy: {lines}")
        assert re.fullmatch(r"power: \d+% over 4 s is above 50%: waking 1 brings it to \d+%",
                            lines[-2]), lines  # fmt: skip
        assert lines[-1] == f"power: {freed[0]} is awake and back in service", lines
        freed = []
        assert json.loads(vmferry("host", "maintenance", "status", "--json").stdout) == []
    finally:
        for host in freed:
            vmferry("lab", "host", "power", host, "on")
            vmferry("host", "maintenance", "exit", host)
