"""The live stream's features: option combinations, and what each host's stack can do."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmferry.assess.stream_features import (
    FINDING_ID,
    RESUME_FINDING_ID,
    choose_stream,
    feature_findings,
    validate,
)
from vmferry.errors import BadInputError
from vmferry.model import HostInfo, Severity
from vmferry.model.migration import Compression, MigrationOptions, Strategy
from vmferry.predict.strategy import MoveStrategy, StrategyChoice, with_choice

# Debian 12's own stack and bookworm-backports' (the lab's two)
STOCK = HostInfo(name="kvm1", hostname="kvm1", uri="qemu+tls://kvm1/system", hypervisor="QEMU",
                 libvirt_version="9.0.0", cpu_model=None, cpu_arch="x86_64", cpus=2,
                 memory_bytes=2**33, free_memory_bytes=2**32,
                 hypervisor_version="7.2.0")  # fmt: skip
MODERN = replace(STOCK, name="kvm2", libvirt_version="11.3.0", hypervisor_version="10.0.2")


@pytest.mark.parametrize(
    ("parallel", "compression", "words"),
    [
        (-1, Compression.NONE, "--parallel must be between 0 and 32"),
        (33, Compression.NONE, "--parallel must be between 0 and 32"),
        (0, Compression.ZSTD, "give --parallel 2 or more"),
        (1, Compression.ZSTD, "give --parallel 2 or more"),
        (4, Compression.XBZRLE, "works on the single stream only"),
    ],
)
def test_combinations_that_cannot_work_are_refused(
    parallel: int, compression: Compression, words: str
) -> None:
    with pytest.raises(BadInputError, match=words):
        validate(parallel, compression)


@pytest.mark.parametrize(
    ("parallel", "compression"),
    [(0, Compression.NONE), (1, Compression.XBZRLE), (2, Compression.ZSTD), (32, Compression.NONE)],
)
def test_combinations_that_work_pass(parallel: int, compression: Compression) -> None:
    validate(parallel, compression)


def test_nothing_asked_nothing_found() -> None:
    assert feature_findings(0, Compression.NONE, STOCK, STOCK) == []


def test_both_modern_hosts_do_everything() -> None:
    both = replace(MODERN, name="kvm1"), MODERN
    assert feature_findings(4, Compression.ZSTD, *both) == []
    assert feature_findings(0, Compression.XBZRLE, *both) == []


def test_multifd_and_xbzrle_are_old_enough_on_the_stock_stack() -> None:
    assert feature_findings(8, Compression.NONE, STOCK, MODERN) == []
    assert feature_findings(0, Compression.XBZRLE, STOCK, MODERN) == []


def test_zstd_needs_libvirt_9_4_on_both_ends_and_names_the_versions() -> None:
    for source, destination in ((STOCK, MODERN), (MODERN, STOCK)):
        [finding] = feature_findings(4, Compression.ZSTD, source, destination)
        assert finding.id == FINDING_ID
        assert finding.severity is Severity.BLOCKER
        assert finding.message == (
            "zstd compression of multifd channels needs libvirt 9.4 and QEMU 5.0 or later on "
            "both hosts; kvm1 has libvirt 9.0.0"
        )
        assert "bookworm-backports" in finding.remediation


def test_each_lacking_host_and_component_is_named() -> None:
    old = replace(STOCK, libvirt_version="5.0.0", hypervisor_version="3.1.0")
    findings = feature_findings(2, Compression.NONE, old, replace(old, name="kvm2"))
    assert [f.message for f in findings] == [
        "multifd channels (--parallel) needs libvirt 5.2 and QEMU 4.0 or later on both hosts; "
        "kvm1 has libvirt 5.0.0 and QEMU 3.1.0; kvm2 has libvirt 5.0.0 and QEMU 3.1.0"
    ]


def test_a_version_libvirt_does_not_give_is_not_held_against_the_host() -> None:
    test_driver = replace(STOCK, hypervisor="TEST", libvirt_version="11.3.0",
                          hypervisor_version="0.0.2")  # fmt: skip
    assert feature_findings(4, Compression.ZSTD, test_driver, MODERN) == []
    unknown = replace(MODERN, libvirt_version="", hypervisor_version=None)
    assert feature_findings(4, Compression.ZSTD, unknown, MODERN) == []


def test_auto_chooses_multifd_with_zstd_where_both_hosts_can() -> None:
    both = choose_stream(MODERN, replace(MODERN, name="kvm3"), precopy_only=True, dirty_share=0.1)
    assert (both.parallel, both.compression) == (4, Compression.ZSTD)
    assert both.why == ("4 multifd channels with zstd, which both hosts can do: measured idle: "
                        "7.1 s instead of 8.2 s, a 27 ms pause instead of 31 "
                        "(bench/live_migration.py, QEMU 10.0 + libvirt 11.3)")  # fmt: skip
    # faster at every measured rate: a busy guest gets them too, the reason its own row's
    busy = choose_stream(MODERN, MODERN, precopy_only=True, dirty_share=0.6)
    assert (busy.parallel, busy.compression) == (4, Compression.ZSTD)
    assert "dirtying at 0.75x of the link: 19.1 s instead of 21.6 s" in busy.why


def test_auto_keeps_the_single_stream_where_a_host_cannot_or_post_copy_may_come() -> None:
    stock = choose_stream(MODERN, STOCK, precopy_only=True, dirty_share=0.0)
    assert (stock.parallel, stock.compression) == (0, Compression.NONE)
    assert stock.why == ("single stream: multifd with zstd needs libvirt 9.4 and QEMU 5.0 on "
                         "both hosts; kvm1 has libvirt 9.0.0")  # fmt: skip
    post = choose_stream(MODERN, MODERN, precopy_only=False, dirty_share=0.0)
    assert (post.parallel, post.compression) == (0, Compression.NONE)
    assert "post-copy" in post.why


def test_the_choice_lands_in_the_options_unless_none_was_made() -> None:
    asked = MigrationOptions(strategy=Strategy.LIVE, max_downtime_ms=150)
    live = StrategyChoice(MoveStrategy.LIVE, "fits", 100, parallel=4, compression="zstd")
    chosen = with_choice(asked, live)
    assert (chosen.strategy, chosen.parallel, chosen.compression) == (
        Strategy.LIVE, 4, Compression.ZSTD)  # fmt: skip
    assert chosen.max_downtime_ms == 150
    warm = with_choice(asked, StrategyChoice(MoveStrategy.WARM, "fits", 900))
    assert (warm.strategy, warm.parallel, warm.compression) == (
        Strategy.WARM, 0, Compression.NONE)  # fmt: skip


def test_post_copy_beside_channels_is_a_blocker_where_qemu_refuses_it() -> None:
    """Measured on QEMU 10.0.2: migrate-set-capabilities refused post-copy with multifd
    ("Postcopy is not yet compatible with multifd"); a later QEMU is not judged here."""
    modern = replace(MODERN, name="kvm1"), replace(MODERN, libvirt_version="11.5.0")
    [finding] = feature_findings(4, Compression.ZSTD, *modern, postcopy=True)
    assert (finding.id, finding.severity) == (FINDING_ID, Severity.BLOCKER)
    assert finding.message == (
        "post-copy with multifd channels (--strategy postcopy --parallel): QEMU 10.0 and "
        "older refuse the two together; kvm1 has QEMU 10.0.2; kvm2 has QEMU 10.0.2"
    )
    assert "drop --parallel" in finding.remediation
    assert feature_findings(4, Compression.ZSTD, *modern) == []  # pre-copy only: fine
    assert feature_findings(0, Compression.NONE, *modern, postcopy=True) == []  # one stream
    newer = replace(modern[1], hypervisor_version="10.1.0")
    assert feature_findings(4, Compression.NONE, newer, newer, postcopy=True) == []


def test_a_move_that_may_switch_to_post_copy_is_warned_where_a_resume_would_crash() -> None:
    """libvirt 11.3.0's destination daemon crashes on a post-copy resume (measured:
    bench/postcopy_resume.py): a move that may switch to post-copy into it gets a warning,
    which blocks nothing; a pre-copy move, or another destination libvirt, gets none."""
    source = replace(MODERN, name="kvm1")
    [warning] = feature_findings(0, Compression.NONE, source, MODERN, postcopy=True)
    assert (warning.id, warning.severity) == (RESUME_FINDING_ID, Severity.WARNING)
    assert warning.message.startswith(
        "a post-copy move that breaks off cannot be resumed here: libvirt 11.3.0 on kvm2 "
        "crashes on the post-copy resume;"
    ), warning.message
    assert "--strategy live" in warning.remediation
    assert feature_findings(0, Compression.NONE, source, MODERN) == []
    assert feature_findings(0, Compression.NONE, MODERN, STOCK, postcopy=True) == []
    # the crash is the destination's: an 11.3.0 source into another libvirt is not warned
    other = replace(MODERN, libvirt_version="11.5.0")
    assert feature_findings(0, Compression.NONE, source, other, postcopy=True) == []
