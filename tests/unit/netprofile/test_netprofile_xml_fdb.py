"""libvirt XML <-> ports/profiles, and FDB verdicts (pure)."""

from __future__ import annotations

import json

from vmferry.model.netprofile import Bandwidth, FdbEntry, Segment
from vmferry.netprofile.fdb import fdb_verdict, parse_fdb
from vmferry.netprofile.libvirt_xml import network_view, portgroup_xml, ports_from_domain

DOMAIN = """<domain type='qemu'><name>web1</name><devices>
  <interface type='network'>
    <mac address='52:54:00:12:02:64'/>
    <source network='vmnet' portgroup='web' bridge='vmbr0'/>
    <target dev='vnet3'/>
    <bandwidth><inbound average='2000' burst='64'/></bandwidth>
  </interface>
  <interface type='bridge'>
    <mac address='52:54:00:AA:BB:CC'/>
    <source bridge='br5'/>
  </interface>
  <interface type='direct'><mac address='52:54:00:00:00:01'/><source dev='eth0'/></interface>
  <interface type='user'><mac address='52:54:00:00:00:02'/></interface>
</devices></domain>"""

NETWORK = """<network><name>vmnet</name><forward mode='bridge'/><bridge name='vmbr0'/>
  <portgroup name='default' default='yes'/>
  <portgroup name='web'><bandwidth><inbound average='1000' peak='2000' burst='64'/>
    <outbound average='500'/></bandwidth></portgroup>
  <portgroup name='odd'><bandwidth><inbound peak='5'/></bandwidth></portgroup>
</network>"""


def test_ports_from_domain() -> None:
    ports = ports_from_domain(DOMAIN)
    assert [p.mac for p in ports] == ["52:54:00:12:02:64", "52:54:00:aa:bb:cc"]
    web, plain = ports
    assert web.vm == "web1" and web.profile == "web" and web.target_dev == "vnet3"
    assert web.segment == Segment("vmnet", "vmbr0")
    assert web.interface_inbound == Bandwidth(2000, None, 64) and web.interface_outbound is None
    assert plain.segment == Segment(None, "br5") and plain.profile is None


def test_network_view() -> None:
    view = network_view(NETWORK)
    assert (view.name, view.bridge, view.forward_mode) == ("vmnet", "vmbr0", "bridge")
    assert view.portgroups["default"].default and view.portgroups["default"].inbound is None
    assert view.portgroups["web"].inbound == Bandwidth(1000, 2000, 64)
    assert view.portgroups["web"].outbound == Bandwidth(500)
    assert view.portgroups["odd"].inbound is None  # no average: no limit


def test_portgroup_xml_round_trips_through_a_network() -> None:
    xml = portgroup_xml("web", Bandwidth(1000, 2000, 64), Bandwidth(500))
    assert xml == (
        "<portgroup name=\"web\"><bandwidth><inbound average='1000' peak='2000' "
        "burst='64'/><outbound average='500'/></bandwidth></portgroup>"
    )
    view = network_view(f"<network><name>n</name>{xml}</network>")
    assert view.portgroups["web"].inbound == Bandwidth(1000, 2000, 64)
    assert portgroup_xml("p", None, None) == '<portgroup name="p"></portgroup>'


MAC = "52:54:00:12:02:64"
UP = frozenset({"vmup0"})


def test_parse_fdb_keeps_the_bridge_entries() -> None:
    rows = [
        {"mac": MAC.upper(), "ifname": "vnet0", "master": "vmbr0", "state": ""},
        {"mac": "aa:aa:aa:aa:aa:aa", "ifname": "vmup0", "master": "vmbr0", "state": "permanent"},
        {"mac": "33:33:00:00:00:01", "ifname": "vmup0", "state": "permanent"},  # not the bridge's
        {"mac": "bb:bb:bb:bb:bb:bb", "ifname": "eth9", "master": "other"},
    ]
    assert parse_fdb(json.dumps(rows), "vmbr0") == (
        FdbEntry(MAC, "vnet0"),
        FdbEntry("aa:aa:aa:aa:aa:aa", "vmup0", local=True),
    )
    assert parse_fdb("", "vmbr0") == ()


def test_fdb_learned() -> None:
    verdict = fdb_verdict(MAC, (FdbEntry(MAC, "vnet0"),), UP, (FdbEntry(MAC, "vmup0"),), UP)
    assert verdict.ok and verdict.destination_port == "vnet0" and verdict.source_claims == ()
    # the source forgot it altogether: also fine
    assert fdb_verdict(MAC.upper(), (FdbEntry(MAC, "vnet0"),), UP, (), UP).ok


def test_fdb_not_learned_at_the_destination() -> None:
    verdict = fdb_verdict(MAC, (FdbEntry(MAC, "vmup0"),), UP, (), UP)
    assert not verdict.ok and "only behind uplink vmup0" in verdict.message
    nowhere = fdb_verdict(MAC, (), UP, (), UP)
    assert not nowhere.ok and nowhere.destination_port is None and "nowhere" in nowhere.message
    local = fdb_verdict(MAC, (FdbEntry(MAC, "vnet0", local=True),), UP, (), UP)
    assert not local.ok


def test_fdb_source_still_claims() -> None:
    verdict = fdb_verdict(MAC, (FdbEntry(MAC, "vnet1"),), UP, (FdbEntry(MAC, "vnet0"),), UP)
    assert not verdict.ok and verdict.source_claims == ("vnet0",)
    assert "still has" in verdict.message
