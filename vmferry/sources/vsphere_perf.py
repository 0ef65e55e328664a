"""vCenter's performance statistics of a VM as workload samples (pure).

vCenter keeps each VM's realtime statistics (a sample every 20 s) for about an hour, so a
vSphere VM's profile is read at once from what already happened instead of sampled from
now on. Each sample becomes a :class:`ProfileSample` with the metrics of
:data:`vmferry.predict.profile.METRICS` that vCenter has:

- ``cpu_share``: ``cpu.usage.average`` (hundredths of a percent of the VM's vCPUs) / 10000;
- ``memory_used_bytes``: ``mem.active.average`` (KB): the memory the guest touched lately,
  vCenter's measure of what it uses (consumed memory counts what it ever touched);
- ``disk_read_bytes_s``, ``disk_write_bytes_s``: ``disk.read.average``,
  ``disk.write.average`` (KBps); ``disk_read_ops_s``, ``disk_write_ops_s``:
  ``disk.numberReadAveraged.average``, ``disk.numberWriteAveraged.average`` (per second);
- ``net_rx_bytes_s``, ``net_tx_bytes_s``: ``net.received.average``,
  ``net.transmitted.average`` (KBps); ``net_rx_packets_s``, ``net_tx_packets_s``:
  ``net.packetsRx.summation``, ``net.packetsTx.summation`` (packets in the interval) over
  the interval.

vSphere's KB is 1024 bytes. There is no dirty rate (vSphere does not measure one) and no
balloon view of unused memory, so ``dirty_rate_bytes_s`` and ``memory_unused_bytes`` are
left out. A value vCenter did not have (-1) leaves that metric out of that sample.
"""

from __future__ import annotations

from vmferry.model.vsphere import RawPerf
from vmferry.model.workload import ProfileSample

__all__ = ["COUNTERS", "samples_from_perf"]

KIB = 1024
MIB = 2**20

#: metric -> (counter, scale to the metric's unit; None: a summation over the interval)
_MAPPING: dict[str, tuple[str, float | None]] = {
    "cpu_share": ("cpu.usage.average", 1 / 10000),
    "memory_used_bytes": ("mem.active.average", KIB),
    "disk_read_bytes_s": ("disk.read.average", KIB),
    "disk_write_bytes_s": ("disk.write.average", KIB),
    "disk_read_ops_s": ("disk.numberReadAveraged.average", 1),
    "disk_write_ops_s": ("disk.numberWriteAveraged.average", 1),
    "net_rx_bytes_s": ("net.received.average", KIB),
    "net_tx_bytes_s": ("net.transmitted.average", KIB),
    "net_rx_packets_s": ("net.packetsRx.summation", None),
    "net_tx_packets_s": ("net.packetsTx.summation", None),
}

#: The counters a vSphere VM's profile asks vCenter for.
COUNTERS = tuple(counter for counter, _scale in _MAPPING.values())


def samples_from_perf(vm: str, host: str, perf: RawPerf, vcpus: int,
                      memory_mb: int) -> list[ProfileSample]:  # fmt: skip
    """One sample per time vCenter gave, oldest first, of VM ``vm`` (``host`` names where
    it runs: ``vsphere://SOURCE``), which has ``vcpus`` and ``memory_mb``."""
    samples = []
    for i, taken_at in enumerate(perf.taken_at):
        metrics: dict[str, float | int] = {"vcpus": vcpus, "memory_bytes": memory_mb * MIB}
        for metric, (counter, scale) in _MAPPING.items():
            values = perf.series.get(counter, ())
            value = values[i] if i < len(values) else None
            if value is None:
                continue
            metrics[metric] = value / perf.interval_s if scale is None else value * scale
        samples.append(ProfileSample(vm=vm, host=host, taken_at=taken_at, metrics=metrics))
    return samples
