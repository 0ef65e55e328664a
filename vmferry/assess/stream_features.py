"""The live stream's optional features (multifd channels, zstd, XBZRLE): whether the options
ask for a sane combination, and whether both hosts' libvirt and QEMU can do what is asked
(pure).

A feature needs a libvirt that passes it to QEMU (the migration flag or parameter) and a
QEMU that implements it, on both ends: the source sends, the destination's QEMU receives.
What a host runs is in its :class:`~vmferry.model.HostInfo` (``libvirt_version``,
``hypervisor_version``). A feature one end lacks is a blocker naming both versions; the
lab checks them on Debian 12's libvirt 9.0 + QEMU 7.2 and backports' 11.3 + 10.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.assess.preflight import version_of
from vmferry.errors import BadInputError
from vmferry.model import Finding, HostInfo, Severity
from vmferry.model.migration import Compression

__all__ = [
    "AUTO_PARALLEL",
    "FINDING_ID",
    "MAX_PARALLEL",
    "MEASURED",
    "NEEDS",
    "POSTCOPY_RESUME_CRASHES",
    "RESUME_FINDING_ID",
    "Need",
    "StreamChoice",
    "choose_stream",
    "feature_findings",
    "postcopy_resume_crashes",
    "validate",
]

FINDING_ID = "migration.feature-unsupported"
MAX_PARALLEL = 32


@dataclass(frozen=True)
class Need:
    """The oldest libvirt and QEMU that do a feature."""

    what: str
    libvirt: tuple[int, int]
    qemu: tuple[int, int]


NEEDS = {
    # VIR_MIGRATE_PARALLEL (libvirt 5.2) over QEMU's multifd capability (QEMU 4.0)
    "parallel": Need("multifd channels (--parallel)", (5, 2), (4, 0)),
    # zstd for multifd: the "zstd" compression method of parallel migration (libvirt 9.4,
    # with its level parameter) and QEMU's multifd-compression=zstd (QEMU 5.0)
    Compression.ZSTD.value: Need("zstd compression of multifd channels", (9, 4), (5, 0)),
    # XBZRLE: VIR_MIGRATE_COMPRESSED with the xbzrle method (libvirt 1.3), QEMU 1.2
    Compression.XBZRLE.value: Need("XBZRLE compression", (1, 3), (1, 2)),
}


def validate(parallel: int, compression: Compression) -> None:
    """Refuse, in one line, options that cannot go together (nothing is checked or
    started)."""
    if parallel < 0 or parallel > MAX_PARALLEL:
        raise BadInputError(f"--parallel must be between 0 and {MAX_PARALLEL} (got {parallel})")
    if compression is Compression.ZSTD and parallel < 2:
        raise BadInputError(
            "--compress zstd compresses multifd channels: give --parallel 2 or more"
        )
    if compression is Compression.XBZRLE and parallel >= 2:
        raise BadInputError(
            "--compress xbzrle works on the single stream only: drop --parallel, or use "
            "--compress zstd with it"
        )


def _versions(need: Need) -> str:
    """The oldest libvirt and QEMU that do ``need``, in words."""
    return (f"libvirt {need.libvirt[0]}.{need.libvirt[1]} and QEMU "
            f"{need.qemu[0]}.{need.qemu[1]}")  # fmt: skip


def _lacks(host: HostInfo, need: Need) -> str | None:
    """What ``host`` lacks for ``need`` in words, or None. A version libvirt did not give
    (a test driver) is taken as able: the move itself would say otherwise."""
    libvirt, qemu = version_of(host.libvirt_version), version_of(host.hypervisor_version)
    short = []
    if libvirt is not None and libvirt < need.libvirt:
        short.append(f"libvirt {host.libvirt_version}")
    if qemu is not None and host.hypervisor == "QEMU" and qemu < need.qemu:
        short.append(f"QEMU {host.hypervisor_version}")
    return f"{host.name} has {' and '.join(short)}" if short else None


# QEMU refused post-copy beside multifd channels up to the newest version measured here
# ("Postcopy is not yet compatible with multifd" from migrate-set-capabilities, QEMU 10.0.2,
# 2026-12-06: the move failed before it began). 10.1 and later are not known to do it, only
# not judged: the move itself says. libvirt passes both flags whatever its version.
POSTCOPY_WITH_CHANNELS = Need("post-copy beside multifd channels", (0, 0), (10, 1))


# The libvirt versions whose daemon crashes on the destination when a broken post-copy move
# is resumed (`virsh migrate --postcopy-resume`, VIR_MIGRATE_POSTCOPY_RESUME): 11.3.0, whose
# resume path hands qemuProcessIncomingDefNew a null descriptor pointer that it reads
# (libvirt_driver_qemu.so: the prepare-resume call passes 0; the daemon's segfault in 6 of 6
# runs of bench/postcopy_resume.py, TCP and TLS, 2026-12-06). Other versions are not known
# to, only not measured.
POSTCOPY_RESUME_CRASHES = frozenset({"11.3.0"})
RESUME_FINDING_ID = "migration.postcopy-unrecoverable"


def postcopy_resume_crashes(destination: HostInfo) -> bool:
    """The destination's libvirt crashes on a post-copy resume (:data:`POSTCOPY_RESUME_CRASHES`)."""
    return destination.libvirt_version in POSTCOPY_RESUME_CRASHES


def _resume_finding(destination: HostInfo) -> Finding:
    return Finding(
        RESUME_FINDING_ID, Severity.WARNING,
        f"a post-copy move that breaks off cannot be resumed here: libvirt "
        f"{destination.libvirt_version} on {destination.name} crashes on the post-copy resume; "
        "from the switch to post-copy until the move ends, a link down for longer than TCP "
        "keeps retrying leaves the VM split between the two hosts",
        "keep the migration link up during the move, or move it with --strategy live (a "
        "pre-copy move can be aborted with the VM still running on its source)",
    )  # fmt: skip


def feature_findings(
    parallel: int, compression: Compression, source: HostInfo, destination: HostInfo,
    *, postcopy: bool = False,
) -> list[Finding]:  # fmt: skip
    """A blocker for each asked-for feature that the source or the destination cannot do,
    and for multifd channels on a move that may switch to post-copy (``postcopy``) where a
    host's QEMU refuses the two together; a warning for a move that may switch to post-copy
    where the destination's libvirt cannot resume one that breaks off."""
    asked = [key for key, wanted in (("parallel", parallel >= 2),
                                     (compression.value, compression is not Compression.NONE))
             if wanted]  # fmt: skip
    findings = []
    for key in asked:
        need = NEEDS[key]
        lacking = [why for why in (_lacks(source, need), _lacks(destination, need)) if why]
        if not lacking:
            continue
        findings.append(Finding(
            FINDING_ID, Severity.BLOCKER,
            f"{need.what} needs {_versions(need)} or later on both hosts; {'; '.join(lacking)}",
            "move without it, or upgrade libvirt and QEMU there (Debian 12: bookworm-backports "
            "has libvirt 11.3 and QEMU 10.0)",
        ))  # fmt: skip
    refusing = [why for host in (source, destination)
                if (why := _lacks(host, POSTCOPY_WITH_CHANNELS))]  # fmt: skip
    if postcopy and parallel >= 2 and refusing:
        findings.append(Finding(
            FINDING_ID, Severity.BLOCKER,
            "post-copy with multifd channels (--strategy postcopy --parallel): QEMU 10.0 and "
            f"older refuse the two together; {'; '.join(refusing)}",
            "drop --parallel (post-copy runs on the single stream), or use --strategy live "
            "with the channels",
        ))  # fmt: skip
    if postcopy and postcopy_resume_crashes(destination):
        findings.append(_resume_finding(destination))
    return findings


AUTO_PARALLEL = 4
# What the choice rests on: bench/live_migration.py --tools vmferry,vmferry-multifd,virsh-tuned
# --ratios 0,0.25,0.75, one run on QEMU 10.0.2 + libvirt 11.3.0 with the send queue bounded
# (2026-12-06, docs/performance.md): 4 channels with zstd against the single stream, by the
# guest's dirty rate over the link (the row the reason cites: the nearest measured one).
MEASURED = (
    (0.0, "idle: 7.1 s instead of 8.2 s, a 27 ms pause instead of 31"),
    (0.25, "dirtying at 0.25x of the link: 9.3 s instead of 11.5 s, a 30 ms pause "
     "instead of 47"),
    (0.75, "dirtying at 0.75x of the link: 19.1 s instead of 21.6 s, a 262 ms pause "
     "instead of 240"),
)  # fmt: skip


def measured_gain(dirty_share: float) -> str:
    """What the benchmark measured at the dirty share nearest to ``dirty_share``."""
    _share, words = min(MEASURED, key=lambda row: abs(row[0] - dirty_share))
    return f"measured {words} (bench/live_migration.py, QEMU 10.0 + libvirt 11.3)"


@dataclass(frozen=True)
class StreamChoice:
    parallel: int
    compression: Compression
    why: str


def choose_stream(source: HostInfo, destination: HostInfo, *, precopy_only: bool,
                  dirty_share: float) -> StreamChoice:  # fmt: skip
    """The stream `--strategy auto` uses when the user named none, from what was measured:
    4 multifd channels with zstd where both hosts can (faster at every dirty rate measured,
    the pause shorter up to 0.25x of the link and 22 ms longer at 0.75x); the single stream
    where a host cannot, and for a move that may switch to post-copy (QEMU 10.0 refuses it
    beside channels). ``dirty_share`` (the guest's dirty rate over the link) picks the measurement
    the reason cites."""
    single = Compression.NONE
    if not precopy_only:
        return StreamChoice(0, single, "single stream: a move that may switch to post-copy "
                            "runs without multifd channels (QEMU 10.0.2 refused the two "
                            "together)")  # fmt: skip
    zstd = NEEDS[Compression.ZSTD.value]  # multifd's own needs are older
    lacking = [why for need in (NEEDS["parallel"], zstd)
               for why in (_lacks(source, need), _lacks(destination, need)) if why]  # fmt: skip
    if lacking:
        hosts = "; ".join(sorted(set(lacking)))
        return StreamChoice(0, single, f"single stream: multifd with zstd needs "
                            f"{_versions(zstd)} on both hosts; {hosts}")  # fmt: skip
    return StreamChoice(AUTO_PARALLEL, Compression.ZSTD,
                        f"{AUTO_PARALLEL} multifd channels with zstd, which both hosts can do: "
                        f"{measured_gain(dirty_share)}")  # fmt: skip
