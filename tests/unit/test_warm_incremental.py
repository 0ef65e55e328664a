"""`--strategy warm-incremental`: when the rounds stop (predict/incremental.precopy_done), the
undo after each step (engine/offline.undo_plan), the backup and checkpoint documents
(validated against libvirt's own schemas with xmllint), and which ranges a round copies
(drivers/libvirt_pull_backup.changed_extents)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vmferry.drivers.libvirt_pull_backup import changed_extents, checkpoint_xml, pull_xml
from vmferry.drivers.nbd_client import STATE_HOLE, STATE_ZERO
from vmferry.engine.offline import INCREMENTAL_STEPS, Step, Undo, committed, undo_plan
from vmferry.model.migration import Strategy
from vmferry.predict.incremental import Round, precopy_done

MIB = 2**20
INC = Strategy.WARM_INCREMENTAL
SCHEMAS = Path("/usr/share/libvirt/schemas")


def test_the_first_round_is_never_the_last() -> None:
    assert precopy_done([Round(0, 64 * MIB, 0.5)], 300) is None


def test_rounds_stop_when_nothing_changed_or_a_round_fits_the_downtime() -> None:
    whole = Round(0, 64 * MIB, 5.0)
    assert precopy_done([whole, Round(1, 0, 0.1)], 300) == "round 1 found nothing changed"
    fits = precopy_done([whole, Round(1, MIB, 0.2)], 300)
    assert fits == "round 1 copied 1.0 MiB in 0.20 s, within --max-downtime-ms 300"


def test_rounds_go_on_while_they_shrink_and_stop_when_they_do_not() -> None:
    whole = Round(0, 64 * MIB, 5.0)
    assert precopy_done([whole, Round(1, 16 * MIB, 1.2)], 300) is None  # a quarter of it
    stuck = precopy_done([whole, Round(1, 16 * MIB, 1.2), Round(2, 15 * MIB, 1.1)], 300)
    assert stuck is not None and "not a quarter less than round 1's 16.0 MiB" in stuck


def test_rounds_stop_at_the_limit() -> None:
    rounds = [Round(n, (64 >> n) * MIB + MIB, 1.0) for n in range(4)]
    assert precopy_done(rounds[:3], 300, max_rounds=4) is None
    assert precopy_done(rounds, 300, max_rounds=4) == "4 rounds"


def _prefix(n: int) -> list[Step]:
    return list(INCREMENTAL_STEPS[:n])


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, ()),
        (1, (Undo.DELETE_DISK_COPIES, Undo.DELETE_CHECKPOINTS)),  # copies made, VM running
        (2, (Undo.DELETE_DISK_COPIES, Undo.DELETE_CHECKPOINTS)),  # the rounds done
        (3, (Undo.DELETE_DISK_COPIES, Undo.RESUME_ON_SOURCE, Undo.DELETE_CHECKPOINTS)),
        (4, (Undo.DELETE_DISK_COPIES, Undo.RESUME_ON_SOURCE, Undo.DELETE_CHECKPOINTS)),
        (5, (Undo.UNDEFINE_ON_DESTINATION, Undo.DELETE_DISK_COPIES, Undo.RESUME_ON_SOURCE,
             Undo.DELETE_CHECKPOINTS)),
        (6, (Undo.DESTROY_ON_DESTINATION, Undo.UNDEFINE_ON_DESTINATION,
             Undo.DELETE_DISK_COPIES, Undo.RESUME_ON_SOURCE, Undo.DELETE_CHECKPOINTS)),
        (7, (Undo.DESTROY_ON_DESTINATION, Undo.UNDEFINE_ON_DESTINATION,
             Undo.DELETE_DISK_COPIES, Undo.START_ON_SOURCE, Undo.DELETE_CHECKPOINTS)),
        (8, ()),  # the source undefined: committed
        (9, ()),
    ],
)  # fmt: skip
def test_every_undo_leaves_the_vm_on_the_source_and_nothing_on_the_destination(
    n: int, expected: tuple[Undo, ...]
) -> None:
    assert undo_plan(INC, _prefix(n), source_running=True) == expected
    assert committed(_prefix(n)) is (n >= 8)


def test_a_vm_that_stopped_before_anything_was_made_is_started_again() -> None:
    assert undo_plan(INC, [], source_running=False) == (Undo.START_ON_SOURCE,)


def _valid(document: str, schema: str, tmp_path: Path) -> None:
    if shutil.which("xmllint") is None or not (SCHEMAS / schema).exists():
        pytest.fail("xmllint and libvirt's schemas are installed by `make install`")
    path = tmp_path / "doc.xml"
    path.write_text(document)
    done = subprocess.run(["xmllint", "--noout", "--relaxng", str(SCHEMAS / schema), str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_backup_and_checkpoint_documents_are_what_libvirt_accepts(tmp_path: Path) -> None:
    whole = pull_xml("198.18.0.11", 10809, ["vda"], ["vdb"], None)
    since = pull_xml("198.18.0.11", 10810, ["vda", "vdc"], [], "vmferry-3f2a9c0e-0")
    assert "<incremental>" not in whole and "port='10809'" in whole
    assert "<incremental>vmferry-3f2a9c0e-0</incremental>" in since
    for document in (whole, since):
        _valid(document, "domainbackup.rng", tmp_path)
    _valid(checkpoint_xml("vmferry-3f2a9c0e-1", ["vda"], ["vdb"]), "domaincheckpoint.rng",
           tmp_path)  # fmt: skip


class _Extents:
    """An NBD client as far as changed_extents looks: a size and block status replies."""

    def __init__(self, size: int, extents: list[tuple[int, int]]) -> None:
        self.size, self._extents = size, extents

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        at, found = 0, []
        for extent_length, flags in self._extents:
            if at + extent_length > offset:
                found.append((at + extent_length - max(at, offset), flags))
            at += extent_length
        return found[:2]  # servers may answer with fewer extents than asked


def test_dirty_ranges_are_merged_across_small_gaps() -> None:
    client = _Extents(16 * MIB, [(MIB, 1), (MIB // 2, 0), (MIB, 1), (4 * MIB, 0), (MIB, 1),
                                 (8 * MIB + MIB // 2, 0)])  # fmt: skip
    found = list(changed_extents(client, dirty_bitmap=True))  # type: ignore[arg-type]
    assert found == [(0, int(2.5 * MIB)), (int(6.5 * MIB), MIB)]


def test_a_whole_copy_skips_holes_and_zeros() -> None:
    client = _Extents(8 * MIB, [(MIB, 0), (2 * MIB, STATE_HOLE | STATE_ZERO), (MIB, STATE_ZERO),
                                (4 * MIB, 0)])  # fmt: skip
    found = list(changed_extents(client, dirty_bitmap=False, gap=0))  # type: ignore[arg-type]
    assert found == [(0, MIB), (4 * MIB, 4 * MIB)]
