"""Rate limits of a port profile as tc commands (pure: the commands, never run here).

libvirt applies a portgroup's ``<bandwidth>`` with ``tc ... sfq`` and the ``police``
action; where the kernel has neither (the lab's), the guest does not even start. So on the
hosts where vmferry runs commands it shapes itself, with ``htb`` only:

- **to the VM** (the profile's ``inbound``): an ``htb`` root on the VM's tap (``vnetN``),
  whose egress is exactly the traffic to the VM. The tap exists only while the VM runs on
  the host (during a migration, from the moment the incoming QEMU starts).
- **from the VM** (``outbound``): on the egress of each uplink of the VM's bridge (the
  host's port toward the fabric), one ``htb`` class per VM MAC, chosen by a ``u32`` filter on
  the Ethernet source address (``at -8``/``at -4``: u32 offsets count from the network
  header, and the source MAC is the 6 bytes before the EtherType). Traffic that leaves by the
  uplink is shaped; traffic to VMs on the same host bridge is not.

The class minor number and the filter priority both derive from the MAC's last 16 bits (so
they can be found again without state); two VMs on one host whose MACs end alike collide.
"""

from __future__ import annotations

from vmferry.model.netprofile import Bandwidth

UPLINK_HANDLE = "1:"
TAP_HANDLE = "1:"
TAP_CLASS = "1:1"


def rate_kbit(bw: Bandwidth) -> int:
    """tc's kbit (1000 bit/s) for libvirt's KiB/s."""
    return max(8, round(bw.average_kib_s * 1024 * 8 / 1000))


def burst_bytes(bw: Bandwidth) -> int:
    """The bucket: the profile's burst, else 10 ms of the rate, at least 16 KiB."""
    if bw.burst_kib:
        return bw.burst_kib * 1024
    return max(16 * 1024, bw.average_kib_s * 1024 // 100)


def mac_slot(mac: str) -> int:
    """2..0xffff from the MAC's last 16 bits: the uplink class minor and filter priority."""
    low = int(mac.lower().replace(":", "")[-4:], 16)
    return low % 0xFFFE + 2


def _htb_class(dev: str, classid: str, bw: Bandwidth) -> list[str]:
    rate = f"{rate_kbit(bw)}kbit"
    return ["class", "replace", "dev", dev, "parent", "1:", "classid", classid, "htb",
            "rate", rate, "ceil", rate, "burst", str(burst_bytes(bw)),
            "cburst", str(burst_bytes(bw))]  # fmt: skip


def tap_commands(tap: str, bw: Bandwidth) -> list[list[str]]:
    """``tc`` argument lists that limit traffic to the VM on its tap."""
    return [
        ["qdisc", "replace", "dev", tap, "root", "handle", TAP_HANDLE, "htb", "default", "1"],
        _htb_class(tap, TAP_CLASS, bw),
    ]


def uplink_root_command(uplink: str) -> list[str]:
    """The uplink's root ``htb`` (unclassified traffic passes unshaped: ``default 0``)."""
    return ["qdisc", "add", "dev", uplink, "root", "handle", UPLINK_HANDLE, "htb", "default", "0"]


def uplink_commands(uplink: str, mac: str, bw: Bandwidth) -> list[list[str]]:
    """``tc`` argument lists for the VM's class and its source-MAC filter on ``uplink`` (the
    root htb must exist; the filter is replaced, not duplicated: delete it first)."""
    slot = mac_slot(mac)
    octets = mac.lower().split(":")
    if len(octets) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    high = "0x" + "".join(octets[:4])
    low = "0x" + "".join(octets[4:])
    return [
        _htb_class(uplink, f"1:{slot:x}", bw),
        ["filter", "add", "dev", uplink, "parent", "1:", "protocol", "all", "prio", str(slot),
         "u32", "match", "u32", high, "0xffffffff", "at", "-8",
         "match", "u16", low, "0xffff", "at", "-4", "flowid", f"1:{slot:x}"],
    ]  # fmt: skip


def uplink_filter_delete(uplink: str, mac: str) -> list[str]:
    return ["filter", "del", "dev", uplink, "parent", "1:", "prio", str(mac_slot(mac))]


def uplink_class_delete(uplink: str, mac: str) -> list[str]:
    return ["class", "del", "dev", uplink, "classid", f"1:{mac_slot(mac):x}"]


def root_is_htb(qdisc_text: str) -> bool:
    """Whether ``tc qdisc show dev X`` lists an htb root with handle 1:."""
    return any(
        line.split()[:4] == ["qdisc", "htb", UPLINK_HANDLE, "root"]
        for line in qdisc_text.splitlines()
        if line.strip()
    )


_SCALE = {"gbit": 1_000_000.0, "mbit": 1000.0, "kbit": 1.0, "bit": 0.001}


def class_rate_kbit(class_text: str, classid: str) -> int | None:
    """The rate (kbit) of htb class ``classid`` in ``tc class show dev X`` output (this
    iproute2 prints htb classes as text even with ``-j``)."""
    for line in class_text.splitlines():
        words = line.split()
        if words[:3] != ["class", "htb", classid] or "rate" not in words[:-1]:
            continue
        value = words[words.index("rate") + 1].lower()
        for suffix, scale in _SCALE.items():
            if value.endswith(suffix):
                try:
                    return round(float(value[: -len(suffix)]) * scale)
                except ValueError:
                    return None
    return None
