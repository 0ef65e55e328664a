from __future__ import annotations

import ipaddress

import pytest

from vmferry.lab import topology as topo
from vmferry.lab.network import parse_tbf_rate_mbps

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")


def test_two_host_lab_names_and_addresses() -> None:
    t = topo.make_topology(2, 400)
    assert [h.name for h in t.hosts] == ["kvm1", "kvm2"]
    assert t.hosts[0].uri == "qemu+tls://198.18.0.11/system?pkipath=/var/lib/vmferry-lab/pki/client"
    assert t.hosts[0].libvirt_port == 16514
    insecure = topo.make_topology(2, 400, transport="tcp").hosts[0]
    assert (insecure.uri, insecure.libvirt_port) == ("qemu+tcp://198.18.0.11/system", 16509)
    with pytest.raises(ValueError, match="transport"):
        topo.make_topology(2, 400, transport="ssh")
    assert t.hosts[1].migration_uri == "tcp://198.18.1.12"
    assert t.namespaces == ("vmf-fabric", "vmf-client", "vmf-kvm1", "vmf-kvm2")
    assert t.host("kvm2") == t.hosts[1]
    assert t.host("kvm9") is None


def test_every_address_is_inside_the_lab_range() -> None:
    t = topo.make_topology(topo.MAX_HOSTS, 400)
    addrs = [topo.STATION_ADDR, topo.CLIENT_ADDR, topo.guest_addr(topo.LAST_GUEST_OCTET)]
    for h in t.hosts:
        addrs += [h.mgmt_addr, h.migration_addr]
    for net in (topo.MGMT_NET, topo.MIGRATION_NET, topo.VM_NET):
        assert ipaddress.ip_network(net).subnet_of(LAB_RANGE)  # type: ignore[arg-type]
    assert all(ipaddress.ip_address(a) in LAB_RANGE for a in addrs)
    assert len(set(addrs)) == len(addrs)


def test_host_uuids_are_distinct_and_stable() -> None:
    a = topo.make_topology(3, 400)
    b = topo.make_topology(3, 100)
    assert len({h.host_uuid for h in a.hosts}) == 3
    assert [h.host_uuid for h in a.hosts] == [h.host_uuid for h in b.hosts]


@pytest.mark.parametrize(("hosts", "mbps"), [(0, 400), (9, 400), (2, 0), (2, 100_001)])
def test_out_of_range_topologies_are_refused(hosts: int, mbps: int) -> None:
    with pytest.raises(ValueError):
        topo.make_topology(hosts, mbps)


def test_guest_addresses_and_macs() -> None:
    assert topo.free_guest_octet(set()) == 100
    assert topo.free_guest_octet({100, 101, 103}) == 102
    assert topo.guest_mac(100) == "52:54:00:12:02:64"
    with pytest.raises(ValueError, match="full"):
        topo.free_guest_octet(set(range(100, 250)))


def test_tbf_burst_covers_one_timer_tick() -> None:
    assert topo.tbf_burst_bytes(400) == 200_000
    assert topo.tbf_burst_bytes(1) == 32 * 1024


@pytest.mark.parametrize(
    ("text", "mbps"),
    [
        ("qdisc tbf 8001: root refcnt 2 rate 400Mbit burst 200000b lat 50ms", 400),
        ("qdisc tbf 8001: root refcnt 2 rate 1Gbit burst 500000b lat 50ms", 1000),
        ("qdisc tbf 8001: root rate 500Kbit burst 32Kb lat 50ms", 0),
        ("qdisc noqueue 0: root refcnt 2", None),
        ("", None),
        ("qdisc tbf 1: root rate", None),
    ],
)
def test_parse_tbf_rate(text: str, mbps: int | None) -> None:
    assert parse_tbf_rate_mbps(text) == mbps
