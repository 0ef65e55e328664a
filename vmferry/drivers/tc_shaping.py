"""Run the port-profile rate limits (:mod:`vmferry.netprofile.shaping`) on a host with tc."""

from __future__ import annotations

from vmferry.drivers.host_exec import HostExec
from vmferry.errors import VmferryError
from vmferry.model.netprofile import Bandwidth
from vmferry.netprofile import shaping


def _tc(host: HostExec, args: list[str], *, check: bool = True) -> bool:
    done = host.run(["tc", *args], check=False)
    if done.returncode != 0 and check:
        raise VmferryError(
            f"tc {' '.join(args)} on {host.host} failed: {done.stderr.strip()[-200:]}"
        )
    return done.returncode == 0


def _show(host: HostExec, args: list[str]) -> str:
    done = host.run(["tc", *args], check=False)
    return done.stdout if done.returncode == 0 else ""


def shape_tap(host: HostExec, tap: str, bw: Bandwidth) -> None:
    """Limit traffic to the VM on its tap (htb root, one class). A tap shaped already keeps
    its root (``tc qdisc replace`` of an htb root fails: htb cannot change its default) and
    gets its class replaced, as the uplink does."""
    root, *classes = shaping.tap_commands(tap, bw)
    if not shaping.root_is_htb(_show(host, ["qdisc", "show", "dev", tap])):
        _tc(host, root)
    for args in classes:
        _tc(host, args)


def unshape_tap(host: HostExec, tap: str) -> bool:
    return _tc(host, ["qdisc", "del", "dev", tap, "root"], check=False)


def shape_uplink(host: HostExec, uplink: str, mac: str, bw: Bandwidth) -> None:
    """Limit traffic from ``mac`` where it leaves the host by ``uplink``."""
    if not shaping.root_is_htb(_show(host, ["qdisc", "show", "dev", uplink])):
        _tc(host, shaping.uplink_root_command(uplink))
    _tc(host, shaping.uplink_filter_delete(uplink, mac), check=False)
    for args in shaping.uplink_commands(uplink, mac, bw):
        _tc(host, args)


def unshape_uplink(host: HostExec, uplink: str, mac: str) -> bool:
    """Remove ``mac``'s filter and class from ``uplink``; True if its class was there."""
    _tc(host, shaping.uplink_filter_delete(uplink, mac), check=False)
    return _tc(host, shaping.uplink_class_delete(uplink, mac), check=False)


def tap_rate_kbit(host: HostExec, tap: str) -> int | None:
    return shaping.class_rate_kbit(_show(host, ["class", "show", "dev", tap]), shaping.TAP_CLASS)


def uplink_rate_kbit(host: HostExec, uplink: str, mac: str) -> int | None:
    classid = f"1:{shaping.mac_slot(mac):x}"
    return shaping.class_rate_kbit(_show(host, ["class", "show", "dev", uplink]), classid)
