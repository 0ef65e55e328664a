"""Port profiles follow the VM (issue 6), against a real 3-host lab with two VM segments.

kvm1 and kvm2 share the client's VM segment; kvm3 is on another one (``--segments 1,1,2``).
One guest serves the module, in order: it moves kvm1 -> kvm2 with a profile that kvm2 lacks
(a rate limit each way and an ACL), is refused a move to kvm3, then fails a move back to kvm1
(its migration link cut) and stays on kvm2 with its profile intact. Then an operator, through
`vmferry server`, puts the profile on kvm1 and takes it off again, is refused taking it off
kvm2 (the guest uses it there), captures the guest's profiles and profiles kvm2's VMs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import libvirt
import pytest
from support.line_reader import vmferry_server

from vmferry.drivers import nft, tc_shaping
from vmferry.drivers.host_exec import HostExec
from vmferry.lab import client, faults, guests
from vmferry.lab import topology as topo
from vmferry.lab.state import GuestRecord, LabState, load_state
from vmferry.netprofile.libvirt_xml import network_view, ports_from_domain

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

GUEST = "np1"
PROFILE = "web"
RATE_KIB_S = 2048  # each way: 2 MiB/s
TRANSFER_BYTES = 6 * 2**20  # about 3 s at the limit
BLACKOUT_TARGET_MS = 1000


def vmferry(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args],
                          env=os.environ if env is None else env, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def uri(host: str) -> str:
    lab_host = topo.make_topology(3, 400, (1, 1, 2)).host(host)
    assert lab_host is not None
    return lab_host.uri


def hexec(host: str) -> HostExec:
    return HostExec.for_namespace(host, f"{topo.NS_PREFIX}{host}")


def host_view(host: str) -> dict[str, Any]:
    """What ``host`` has of the profile: portgroup, nft chain, MAC bindings, uplink class,
    and whether the guest runs there (with its MAC and tap, and the tap's rate)."""
    conn = libvirt.open(uri(host))
    try:
        view = network_view(conn.networkLookupByName(topo.VM_NETWORK_NAME).XMLDesc(0))
        running = {
            d.name(): d for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        }
        port = None
        if GUEST in running:
            port = ports_from_domain(running[GUEST].XMLDesc(0))[0]
    finally:
        conn.close()
    state = nft.read_state(hexec(host))
    guest = load_state().guests[GUEST]  # type: ignore[union-attr]
    return {
        "portgroup": PROFILE in view.portgroups,
        "portgroup_bandwidth": (
            (view.portgroups[PROFILE].inbound, view.portgroups[PROFILE].outbound)
            if PROFILE in view.portgroups
            else None
        ),
        "chain": f"vmf-{PROFILE}" in state.chains,
        "bound": state.ports.get(guest.mac.lower()),
        "uplink_kbit": tc_shaping.uplink_rate_kbit(hexec(host), "vmup0", guest.mac),
        "running": port is not None,
        "mac": port.mac if port else None,
        "tap_kbit": tc_shaping.tap_rate_kbit(hexec(host), port.target_dev)
        if port and port.target_dev
        else None,
    }


def assert_profile_in_force(addr: str) -> dict[str, float]:
    """The echo service answers, the control port stays blocked, the rate holds both ways."""
    assert len(client.echo(addr, count=2)) == 2
    assert client.port_open(addr, 7) is True
    assert client.port_open(addr, 7001, timeout_s=2) is False
    limit = RATE_KIB_S * 1024
    to_vm = measured_rate(addr, limit, to_vm=True)
    from_vm = measured_rate(addr, limit, to_vm=False)
    print(f"\nrate to the VM {to_vm / 1e6:.3f} MB/s, from it {from_vm / 1e6:.3f} MB/s, "
          f"limit {limit / 1e6:.3f} MB/s")  # fmt: skip
    assert abs(to_vm - limit) <= 0.10 * limit, (to_vm, limit)
    assert abs(from_vm - limit) <= 0.10 * limit, (from_vm, limit)
    return {"to_vm_bytes_s": to_vm, "from_vm_bytes_s": from_vm}


def measured_rate(addr: str, limit: float, *, to_vm: bool) -> float:
    """A bounded transfer's rate, measured once more when it falls short of the band (seen
    in CI: -12.6% with the machine loaded, right after the move), as vmferry's own check
    does; a rate above the band is kept: the shaper would not be holding."""
    rate = client.transfer_rate(addr, TRANSFER_BYTES, to_vm=to_vm)
    if rate < 0.9 * limit:
        print(f"\nrate {'to' if to_vm else 'from'} the VM {rate / 1e6:.3f} MB/s: measured again")
        rate = client.transfer_rate(addr, TRANSFER_BYTES, to_vm=to_vm)
    return rate


@pytest.fixture(scope="module")
def lab3(lab_factory: Callable[..., AbstractContextManager[LabState]]) -> Iterator[LabState]:
    """A 3-host lab, kvm3 on a second VM segment (the module's own store and profiles)."""
    with lab_factory(3, segments=(1, 1, 2)) as state:
        yield state


@pytest.fixture(scope="module")
def guest(lab3: LabState) -> GuestRecord:
    define = vmferry("netprofile", "define", PROFILE, "--network", topo.VM_NETWORK_NAME,
                     "--in-kib-s", str(RATE_KIB_S), "--out-kib-s", str(RATE_KIB_S),
                     "--allow", f"tcp:7,9,19@{topo.VM_NET}", "--allow", "icmp",
                     "--level", "restricted", "--json")  # fmt: skip
    assert define.returncode == 0, define.stderr
    first = vmferry("netprofile", "apply", PROFILE, "--host", "kvm1", "--json")
    assert first.returncode == 0, first.stderr
    record = guests.create_guest(GUEST, "kvm1", memory_mb=256, working_set_mb=64,
                                 portgroup=PROFILE)  # fmt: skip
    bind = vmferry("netprofile", "apply", PROFILE, "--host", "kvm1", "--json")
    assert bind.returncode == 0, bind.stderr
    applied = json.loads(bind.stdout)
    assert applied["bound_macs"] == [record.mac.lower()], applied
    assert len(applied["shaped"]) == 2, applied  # uplink (from the VM) and tap (to it)
    again = vmferry("netprofile", "apply", PROFILE, "--host", "kvm1", "--json")
    assert again.returncode == 0, again.stderr  # the tap shaped already: its class replaced
    assert (json.loads(again.stdout)["portgroup"], json.loads(again.stdout)["rules"]) == (
        "unchanged", "unchanged")  # fmt: skip
    return record


def test_moves_with_its_profile_to_a_host_that_lacks_it(guest: GuestRecord) -> None:
    kvm1 = host_view("kvm1")
    assert kvm1["portgroup"] and kvm1["chain"] and kvm1["running"]
    assert kvm1["portgroup_bandwidth"] == (None, None)  # libvirt's sfq shaping stays off
    assert kvm1["uplink_kbit"] and kvm1["tap_kbit"], kvm1
    assert host_view("kvm2")["portgroup"] is False
    before = assert_profile_in_force(guest.address)

    check = vmferry("check", GUEST, "--to", "kvm2", "--json")
    assert check.returncode == 0, check.stderr
    ids = [f["id"] for f in json.loads(check.stdout)["findings"]]
    assert "netprofile.will-apply" in ids and "network.segment-unreachable" not in ids, ids

    done = vmferry("migrate", GUEST, "--to", "kvm2", "--json")
    result = json.loads(done.stdout)
    job = json.loads(vmferry("job", "show", result["job_id"], "--json").stdout)
    for e in job["events"]:
        if e["kind"] in ("network", "note"):
            print(f"  {e['kind']}: {e['message']}")
    assert done.returncode == 0, (done.stderr, result)
    assert result["status"] == "completed"
    v = result["verification"]
    print(f"blackout seen by the client: {v['network_max_gap_ms']} ms; "
          f"downtime {result['downtime_ms']} ms; total {result['total_time_ms']} ms")  # fmt: skip
    assert isinstance(v["network_max_gap_ms"], int)
    assert v["network_max_gap_ms"] <= BLACKOUT_TARGET_MS, v

    network = [e for e in job["events"] if e["kind"] == "network"]
    fdb = [e["data"] for e in network if "fdb_ok" in (e["data"] or {})]
    assert fdb and fdb[0]["fdb_ok"] and fdb[0]["mac_unchanged"], network
    taps = [e for e in network if (e["data"] or {}).get("tap")]
    assert taps and taps[0]["data"]["after_switchover"] is False, network
    # vmferry's own verification of the profile at the destination, recorded in the job
    verified = [e["data"] for e in job["events"] if e["kind"] == "network-verify"]
    assert verified and verified[0]["ok"] is True, verified
    names = {c["name"] for c in verified[0]["checks"]}
    assert {"port 7 open", "port 7001 blocked", "rate to the VM", "rate from the VM"} <= names

    kvm2 = host_view("kvm2")
    assert kvm2["running"] and kvm2["mac"] == guest.mac.lower()
    assert kvm2["portgroup"] and kvm2["chain"] and kvm2["bound"] == f"vmf-{PROFILE}"
    assert kvm2["uplink_kbit"] and kvm2["tap_kbit"], kvm2
    kvm1 = host_view("kvm1")
    assert not kvm1["running"]
    assert (kvm1["portgroup"], kvm1["chain"], kvm1["bound"], kvm1["uplink_kbit"]) == (
        False, False, None, None)  # fmt: skip
    after = assert_profile_in_force(guest.address)
    print(f"before {before}, after {after}")


def test_a_host_on_another_segment_is_refused_and_left_alone(guest: GuestRecord) -> None:
    done = vmferry("migrate", GUEST, "--to", "kvm3", "--json")
    assert done.returncode == 3, done.stderr
    result = json.loads(done.stdout)
    assert "network.segment-unreachable" in result["reason"], result["reason"]
    kvm3 = host_view("kvm3")
    assert (kvm3["portgroup"], kvm3["chain"], kvm3["bound"], kvm3["uplink_kbit"]) == (
        False, False, None, None)  # fmt: skip
    assert not nft.read_state(hexec("kvm3")).present
    assert host_view("kvm2")["running"]


def test_a_failed_move_leaves_the_profile_only_on_the_source(guest: GuestRecord) -> None:
    # kvm1's migration link is cut: kvm2's libvirt waits for the connect to time out
    started = time.monotonic()
    with faults.syn_retries("kvm2", 3), faults.migration_link_cut("kvm1"):
        done = vmferry("migrate", GUEST, "--to", "kvm1", "--json", timeout=180)
    result = json.loads(done.stdout)
    job = json.loads(vmferry("job", "show", result["job_id"], "--json").stdout)
    print(f"\nfailed after {time.monotonic() - started:.1f} s: {result['reason']}")
    for e in job["events"]:
        if e["kind"] in ("network", "note"):
            print(f"  {e['kind']}: {e['message']}")
    assert done.returncode == 4, (done.stderr, result)
    assert result["status"] == "failed"
    assert any((e["data"] or {}).get("undo") for e in job["events"] if e["kind"] == "network")

    kvm1 = host_view("kvm1")
    assert not kvm1["running"]
    assert (kvm1["portgroup"], kvm1["chain"], kvm1["bound"], kvm1["uplink_kbit"]) == (
        False, False, None, None)  # fmt: skip
    kvm2 = host_view("kvm2")
    assert kvm2["running"] and kvm2["mac"] == guest.mac.lower()
    assert kvm2["portgroup"] and kvm2["chain"] and kvm2["bound"] == f"vmf-{PROFILE}"
    assert kvm2["uplink_kbit"] and kvm2["tap_kbit"], kvm2
    assert len(client.echo(guest.address, count=2)) == 2
    assert client.port_open(guest.address, 7001, timeout_s=2) is False


def test_an_operator_works_the_profile_through_the_server(guest: GuestRecord) -> None:
    added = vmferry("users", "add", "ops", "--role", "operator", "--json")
    assert added.returncode == 0, added.stderr
    with vmferry_server(dict(os.environ)) as served:
        env = {**os.environ, "VMFERRY_URL": served.url,
               "VMFERRY_TOKEN": json.loads(added.stdout)["token"]}  # fmt: skip
        env.pop("VMFERRY_DB")  # the server's store, not this one, answers

        applied = vmferry("netprofile", "apply", PROFILE, "--host", "kvm1", "--json", env=env)
        assert applied.returncode == 0, applied.stderr
        assert (json.loads(applied.stdout)["portgroup"], json.loads(applied.stdout)["rules"]) == (
            "added", "written")  # fmt: skip
        kvm1 = host_view("kvm1")
        assert (kvm1["portgroup"], kvm1["chain"], kvm1["running"]) == (True, True, False)

        removed = vmferry("netprofile", "remove", PROFILE, "--host", "kvm1", "--json", env=env)
        assert removed.returncode == 0, removed.stderr
        assert f"portgroup {PROFILE} of {topo.VM_NETWORK_NAME}" in json.loads(removed.stdout)[
            "removed"]  # fmt: skip
        kvm1 = host_view("kvm1")
        assert (kvm1["portgroup"], kvm1["chain"]) == (False, False)

        busy = vmferry("netprofile", "remove", PROFILE, "--host", "kvm2", env=env)
        assert busy.returncode == 2 and busy.stdout == ""
        assert busy.stderr.strip() == f"vmferry: profile {PROFILE!r} is in use on kvm2 by {GUEST}"
        kvm2 = host_view("kvm2")
        assert kvm2["portgroup"] and kvm2["bound"] == f"vmf-{PROFILE}"  # left as it was

        captured = vmferry("netprofile", "capture", GUEST, "--json", env=env)
        assert captured.returncode == 0, captured.stderr
        doc = json.loads(captured.stdout)
        assert (doc["host"], [p["profile"] for p in doc["ports"]]) == ("kvm2", [PROFILE])
        assert [p["mac"] for p in doc["ports"]] == [guest.mac.lower()]
        kept = doc["profiles"][0]
        assert (kept["inbound"]["average_kib_s"], kept["security_level"]) == (
            RATE_KIB_S, "restricted")  # fmt: skip

        sampled = vmferry("profile", "--host", "kvm2", "--duration", "2", "--interval", "1",
                          "--json", env=env)  # fmt: skip
        assert sampled.returncode == 0, sampled.stderr
        runs = {r["vm"]: r for r in json.loads(sampled.stdout)}
        assert runs[GUEST]["host"] == "kvm2" and runs[GUEST]["samples"] == 2, runs
        assert runs[GUEST]["stats"]["cpu_share"]["max"] >= 0

        trail = json.loads(vmferry("audit", "--user", "ops", "--json", env=env).stdout)
    assert [(e["action"], e["target"], e["result"]) for e in trail] == [
        ("netprofiles.write", PROFILE, "ok"), ("netprofiles.write", PROFILE, "ok"),
        ("netprofiles.write", PROFILE, "rejected"), ("netprofiles.write", GUEST, "ok"),
        ("profile", "kvm2", "ok")]  # fmt: skip
