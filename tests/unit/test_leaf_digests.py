"""LeafDigests (a copy updated in place keeps the digest a whole read gives) and
changed_runs (changed areas rounded out to the leaves read again)."""

from __future__ import annotations

import os
import random

import pytest

from vmferry.model.disk_digest import LEAF, DiskDigester, LeafDigests, Run, changed_runs


def whole(content: bytes) -> str:
    digester = DiskDigester(len(content))
    digester.add_data(memoryview(content))
    return digester.finish().hexdigest


@pytest.mark.parametrize("size", [LEAF, 5 * LEAF + 1234, 3 * LEAF])
def test_leaves_updated_in_place_give_the_digest_of_the_final_content(size: int) -> None:
    rng = random.Random(size)
    disk = bytearray(size)
    leaves = LeafDigests(size)
    assert leaves.digest().hexdigest == whole(bytes(disk))  # all zeros, nothing set
    disk[:] = os.urandom(size)
    leaves.set_data(0, bytes(disk))
    assert leaves.digest().hexdigest == whole(bytes(disk))
    for _ in range(5):  # a few leaves change, some to zeros; only they are set again
        index = rng.randrange(-(-size // LEAF))
        start, end = index * LEAF, min((index + 1) * LEAF, size)
        disk[start:end] = bytes(end - start) if rng.random() < 0.3 else os.urandom(end - start)
        zero = leaves.set_data(start, bytes(disk[start:end]))
        assert zero == [not any(disk[start:end])]
        assert leaves.digest().hexdigest == whole(bytes(disk))


def test_a_digest_of_more_than_one_span_matches() -> None:
    size = 2**30 + 3 * LEAF  # two spans: the second holds three leaves
    leaves = LeafDigests(size)
    leaves.set_data(2**30 + LEAF, b"x" * LEAF)
    digester = DiskDigester(size)
    digester.add_zeros(2**30 + LEAF)
    digester.add_data(memoryview(b"x" * LEAF))
    digester.add_zeros(LEAF)
    assert leaves.digest() == digester.finish()


def test_pieces_that_are_not_whole_leaves_are_refused() -> None:
    leaves = LeafDigests(4 * LEAF)
    for offset, length in ((1, LEAF), (0, LEAF - 1), (3 * LEAF, 2 * LEAF)):
        with pytest.raises(ValueError, match="not whole leaves"):
            leaves.set_data(offset, bytes(length))


def test_changed_areas_are_rounded_out_merged_and_split() -> None:
    size = 10 * LEAF + 100
    areas = [(LEAF + 5, 10), (2 * LEAF - 1, 2), (7 * LEAF, 0), (10 * LEAF, 100), (0, 1)]
    assert changed_runs(areas, size, 2 * LEAF) == [
        # 0+1, LEAF+5 and 2*LEAF-1 round out to leaves 0, 1 and 1-2: one run, split
        Run(0, 2 * LEAF, False),
        Run(2 * LEAF, LEAF, False),
        Run(10 * LEAF, 100, False),  # the short last leaf
    ]
    assert changed_runs([], size, LEAF) == []
    with pytest.raises(ValueError, match="outside the disk"):
        changed_runs([(size - 1, 2)], size, LEAF)


def test_data_areas_become_a_block_status() -> None:
    from vmferry.drivers.datastore_http import status_from_areas

    areas = [(100, 50), (0, 10), (120, 100)]  # unsorted, overlapping
    assert status_from_areas(areas, 0, 300) == [(10, True), (90, False), (120, True),
                                                (80, False)]  # fmt: skip
    assert status_from_areas(areas, 5, 20) == [(5, True), (15, False)]
    assert status_from_areas(areas, 150, 10) == [(10, True)]
    assert status_from_areas([], 0, 64) == [(64, False)]
