"""Sample running VMs' counters (libvirt's bulk domain statistics) for workload profiles.

One ``domainListGetStats`` / ``getAllDomainStats`` call reads, per VM: vCPU time, the
balloon (current, available, unused: the guest driver's own report), every disk's read and
write bytes and requests, every interface's bytes and packets. The counters are cumulative;
:func:`rates` turns two readings into per-second rates (pure).

The dirty rate is not libvirt's (``VIR_DOMAIN_STATS_DIRTYRATE`` after
``startDirtyRateCalc`` samples 512 pages per GiB, too few on a small guest): QEMU's
``calc-dirty-rate`` with 10000 pages per GiB runs in the background over one interval
(:func:`start_dirty_rate`) and is read at the next sample (:func:`read_dirty_rate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.qemu_monitor import SAMPLE_PAGES_PER_GIB, qmp
from vmferry.errors import VmferryError

_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
_KIB = 1024


@dataclass(frozen=True)
class DomainCounters:
    """Cumulative counters of one running VM at ``at_s`` (monotonic seconds)."""

    vm: str
    at_s: float
    vcpus: int
    cpu_ns: int  # the vCPUs' time when libvirt reports it per vCPU, else the whole VM's
    memory_bytes: int | None  # balloon current
    available_bytes: int | None
    unused_bytes: int | None
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    disk_read_ops: int = 0
    disk_write_ops: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0
    net_rx_packets: int = 0
    net_tx_packets: int = 0


def _int(stats: dict[str, Any], key: str) -> int | None:
    value = stats.get(key)
    return None if value is None else int(value)


def counters_from_stats(vm: str, at_s: float, stats: dict[str, Any]) -> DomainCounters:
    """Pure: one VM's record from ``getAllDomainStats`` as :class:`DomainCounters`."""
    vcpus = _int(stats, "vcpu.current") or _int(stats, "vcpu.maximum") or 1
    per_vcpu = [_int(stats, f"vcpu.{i}.time") for i in range(vcpus)]
    cpu = (
        sum(t for t in per_vcpu if t is not None)
        if all(t is not None for t in per_vcpu)
        else _int(stats, "cpu.time") or 0
    )

    def kib(key: str) -> int | None:
        value = _int(stats, key)
        return None if value is None else value * _KIB

    def total(prefix: str, count_key: str, field: str) -> int:
        count = _int(stats, count_key) or 0
        return sum(_int(stats, f"{prefix}.{i}.{field}") or 0 for i in range(count))

    return DomainCounters(
        vm=vm,
        at_s=at_s,
        vcpus=vcpus,
        cpu_ns=cpu,
        memory_bytes=kib("balloon.current"),
        available_bytes=kib("balloon.available"),
        unused_bytes=kib("balloon.unused"),
        disk_read_bytes=total("block", "block.count", "rd.bytes"),
        disk_write_bytes=total("block", "block.count", "wr.bytes"),
        disk_read_ops=total("block", "block.count", "rd.reqs"),
        disk_write_ops=total("block", "block.count", "wr.reqs"),
        net_rx_bytes=total("net", "net.count", "rx.bytes"),
        net_tx_bytes=total("net", "net.count", "tx.bytes"),
        net_rx_packets=total("net", "net.count", "rx.pkts"),
        net_tx_packets=total("net", "net.count", "tx.pkts"),
    )


def rates(before: DomainCounters, after: DomainCounters) -> dict[str, float | int | None]:
    """Pure: the profile metrics (see :data:`vmferry.predict.profile.METRICS`) between two
    readings of one VM. Counters that went backwards (a restart) give 0."""
    dt = after.at_s - before.at_s
    if dt <= 0:
        raise ValueError("the second reading must be later than the first")

    def per_s(a: int, b: int) -> float:
        return max(0, b - a) / dt

    used = None
    if after.available_bytes is not None and after.unused_bytes is not None:
        used = max(0, after.available_bytes - after.unused_bytes)
    return {
        "cpu_share": min(1.0, per_s(before.cpu_ns, after.cpu_ns) / 1e9 / max(1, after.vcpus)),
        "vcpus": after.vcpus,
        "memory_bytes": after.memory_bytes,
        "memory_used_bytes": used,
        "memory_unused_bytes": after.unused_bytes,
        "disk_read_bytes_s": per_s(before.disk_read_bytes, after.disk_read_bytes),
        "disk_write_bytes_s": per_s(before.disk_write_bytes, after.disk_write_bytes),
        "disk_read_ops_s": per_s(before.disk_read_ops, after.disk_read_ops),
        "disk_write_ops_s": per_s(before.disk_write_ops, after.disk_write_ops),
        "net_rx_bytes_s": per_s(before.net_rx_bytes, after.net_rx_bytes),
        "net_tx_bytes_s": per_s(before.net_tx_bytes, after.net_tx_bytes),
        "net_rx_packets_s": per_s(before.net_rx_packets, after.net_rx_packets),
        "net_tx_packets_s": per_s(before.net_tx_packets, after.net_tx_packets),
        "dirty_rate_bytes_s": None,
    }


def read_counters(
    host: LibvirtHost, vms: Iterable[str] | None, at_s: float
) -> dict[str, DomainCounters]:
    """Counters of the named running VMs (None: every running VM of the host)."""
    conn = host._c
    try:
        if vms is None:
            records = conn.getAllDomainStats(
                _STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING
            )
        else:
            domains = [host._lookup(vm) for vm in vms]
            records = conn.domainListGetStats(domains, _STATS, 0) if domains else []
    except libvirt.libvirtError as exc:
        raise host._error(exc, "reading domain statistics") from exc
    return {
        str(dom.name()): counters_from_stats(str(dom.name()), at_s, dict(stats))
        for dom, stats in records
    }


def start_dirty_rate(host: LibvirtHost, vm: str, seconds: int) -> bool:
    """Start QEMU's page-sampling dirty-rate measurement over ``seconds``; False if QEMU
    refused (another measurement running, an old QEMU)."""
    try:
        qmp(
            host,
            vm,
            "calc-dirty-rate",
            {"calc-time": max(1, seconds), "sample-pages": SAMPLE_PAGES_PER_GIB},
        )
    except VmferryError:
        return False
    return True


def read_dirty_rate(host: LibvirtHost, vm: str) -> int | None:
    """The last finished measurement in bytes/s; None while it runs or if there is none."""
    try:
        info = qmp(host, vm, "query-dirty-rate")
    except VmferryError:
        return None
    if not isinstance(info, dict) or info.get("status") != "measured":
        return None
    return int(info.get("dirty-rate", 0)) * 2**20  # QEMU reports MiB/s
