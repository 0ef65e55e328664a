from __future__ import annotations

from dataclasses import replace

import libvirt

from vmferry.drivers.libvirt_migration import (
    MigrationRequest,
    _flags,
    _params,
    completed_from_stats,
    sample_from_stats,
)
from vmferry.service.migrate import link_bandwidth_mib_s

REQUEST = MigrationRequest("vm1", "qemu+tcp://198.18.0.12/system", "tcp://198.18.1.12", 48, False)


def test_running_job_stats_become_a_sample() -> None:
    stats = {"type": 2, "time_elapsed": 13026, "memory_iteration": 2, "memory_total": 537526272,
             "memory_processed": 408781488, "memory_remaining": 222420992,
             "memory_dirty_rate": 8749, "memory_page_size": 4096, "memory_bps": 51930178,
             "downtime": 5212, "auto_converge_throttle": 21}  # fmt: skip
    s = sample_from_stats(stats, postcopy=False)
    assert (s.elapsed_ms, s.iteration, s.memory_remaining_bytes) == (13026, 2, 222420992)
    assert s.dirty_rate_bytes_s == 8749 * 4096
    assert s.throughput_bytes_s == 51930178
    assert (s.expected_downtime_ms, s.throttle_pct, s.postcopy) == (5212, 21, False)


def test_missing_fields_are_zero_not_errors() -> None:
    s = sample_from_stats({"type": 2}, postcopy=True)
    assert (s.iteration, s.memory_remaining_bytes, s.dirty_rate_bytes_s) == (0, 0, 0)
    assert s.expected_downtime_ms is None and s.postcopy


def test_completed_stats() -> None:
    c = completed_from_stats({"time_elapsed": 11529, "downtime": 334, "data_processed": 364547,
                              "memory_processed": 1, "memory_iteration": 3})  # fmt: skip
    assert (c.total_time_ms, c.downtime_ms, c.transferred_bytes, c.iterations) == (
        11529, 334, 364547, 3)  # fmt: skip
    assert completed_from_stats({"memory_processed": 7}).transferred_bytes == 7
    assert completed_from_stats({}).total_time_ms is None


def test_flags_follow_the_request() -> None:
    base = _flags(REQUEST)
    for flag in (libvirt.VIR_MIGRATE_LIVE, libvirt.VIR_MIGRATE_PEER2PEER,
                 libvirt.VIR_MIGRATE_PERSIST_DEST, libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
                 libvirt.VIR_MIGRATE_AUTO_CONVERGE):  # fmt: skip
        assert base & flag
    for flag in (libvirt.VIR_MIGRATE_POSTCOPY, libvirt.VIR_MIGRATE_UNSAFE,
                 libvirt.VIR_MIGRATE_NON_SHARED_DISK):  # fmt: skip
        assert not base & flag
    more = MigrationRequest("vm1", "u", None, None, True, unsafe=True, copy_disks=("vdb",))
    assert _flags(more) & libvirt.VIR_MIGRATE_POSTCOPY
    assert _flags(more) & libvirt.VIR_MIGRATE_UNSAFE
    assert _flags(more) & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    assert _params(more)[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] == ["vdb"]
    assert libvirt.VIR_MIGRATE_PARAM_URI not in _params(more)


def test_parallel_channels_and_compression_follow_the_request() -> None:
    plain = (_flags(REQUEST), _params(REQUEST))
    assert not plain[0] & (libvirt.VIR_MIGRATE_PARALLEL | libvirt.VIR_MIGRATE_COMPRESSED)
    assert libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS not in plain[1]
    assert libvirt.VIR_MIGRATE_PARAM_COMPRESSION not in plain[1]
    zstd = MigrationRequest("vm1", "u", None, None, False, parallel=4, compression="zstd")
    assert _flags(zstd) & libvirt.VIR_MIGRATE_PARALLEL
    assert _flags(zstd) & libvirt.VIR_MIGRATE_COMPRESSED
    assert _params(zstd)[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] == 4
    assert _params(zstd)[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] == "zstd"
    one = MigrationRequest("vm1", "u", None, None, False, parallel=1, compression="xbzrle")
    assert not _flags(one) & libvirt.VIR_MIGRATE_PARALLEL  # one channel: the plain stream
    assert _params(one)[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] == "xbzrle"


def test_params_carry_uri_bandwidth_and_a_dormant_auto_converge() -> None:
    p = _params(REQUEST)
    assert p[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://198.18.1.12"
    assert p[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 48
    assert p[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] == 1
    # post-copy, when allowed, is held to the same cap (QEMU leaves it unlimited otherwise)
    assert libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY not in p
    postcopy = _params(replace(REQUEST, allow_postcopy=True))
    assert postcopy[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] == 48


def test_link_bandwidth_rounds_up() -> None:
    assert link_bandwidth_mib_s(400) == 48  # 47.68 MiB/s
    assert link_bandwidth_mib_s(1000) == 120
    assert link_bandwidth_mib_s(8) == 1
