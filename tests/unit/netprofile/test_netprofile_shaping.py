"""tc commands for port-profile rate limits (netprofile.shaping)."""

from __future__ import annotations

from vmferry.model.netprofile import Bandwidth
from vmferry.netprofile import shaping

MAC = "52:54:00:12:02:64"


def test_rates_and_bursts() -> None:
    assert shaping.rate_kbit(Bandwidth(2048)) == 16777  # 2 MiB/s
    assert shaping.burst_bytes(Bandwidth(2048)) == 20971
    assert shaping.burst_bytes(Bandwidth(100)) == 16 * 1024
    assert shaping.burst_bytes(Bandwidth(2048, None, 64)) == 64 * 1024


def test_mac_slot_is_stable_and_in_range() -> None:
    assert shaping.mac_slot(MAC) == 0x0264 + 2
    assert shaping.mac_slot(MAC.upper()) == shaping.mac_slot(MAC)
    assert shaping.mac_slot("52:54:00:00:ff:ff") == 0xFFFF % 0xFFFE + 2
    assert 2 <= shaping.mac_slot("52:54:00:00:00:00") <= 0xFFFF


def test_tap_commands() -> None:
    qdisc, cls = shaping.tap_commands("vnet3", Bandwidth(2048))
    assert qdisc == ["qdisc", "replace", "dev", "vnet3", "root", "handle", "1:", "htb",
                     "default", "1"]  # fmt: skip
    assert cls[:8] == ["class", "replace", "dev", "vnet3", "parent", "1:", "classid", "1:1"]
    assert "16777kbit" in cls


def test_uplink_filter_matches_the_source_mac() -> None:
    cls, flt = shaping.uplink_commands("vmup0", MAC, Bandwidth(1024))
    slot = shaping.mac_slot(MAC)
    assert cls[7] == f"1:{slot:x}"
    text = " ".join(flt)
    assert f"prio {slot} u32" in text
    assert "match u32 0x52540012 0xffffffff at -8 match u16 0x0264 0xffff at -4" in text
    assert text.endswith(f"flowid 1:{slot:x}")
    assert shaping.uplink_filter_delete("vmup0", MAC)[-1] == str(slot)
    assert shaping.uplink_class_delete("vmup0", MAC)[-1] == f"1:{slot:x}"


def test_reading_tc_output() -> None:
    assert shaping.root_is_htb(
        "qdisc htb 1: root refcnt 2 r2q 10 default 0 direct_packets_stat 3\n"
    )
    assert not shaping.root_is_htb("qdisc noqueue 0: root refcnt 2\n")
    text = (
        "class htb 1:266 root prio 0 rate 16777Kbit ceil 16777Kbit burst 20967b cburst 20967b \n"
        "class htb 1:1 root prio 0 rate 2Mbit ceil 2Mbit burst 1600b cburst 1600b \n"
    )
    assert shaping.class_rate_kbit(text, "1:266") == 16777
    assert shaping.class_rate_kbit(text, "1:1") == 2000
    assert shaping.class_rate_kbit(text, "1:2") is None
