"""The canonical disk digest and the reads that compute it (pure)."""

from __future__ import annotations

import os
import random

import pytest
from blake3 import blake3
from support.digest_reference import reference_digest

from vmferry.model.disk_digest import (
    LEAF,
    SPAN,
    Digest,
    DiskDigester,
    Extent,
    Run,
    copy_failure,
    leaf_digests,
    nonzero_ranges,
    plan_runs,
    zero_digest,
)


def digest_by_runs(content: bytes, extents: list[Extent], max_read: int = 4 * LEAF) -> Digest:
    """What the copy does: zero runs declared, the other runs read and hashed."""
    digester = DiskDigester(len(content))
    for run in plan_runs(extents, len(content), max_read):
        if run.zero:
            assert content[run.offset : run.offset + run.length] == bytes(run.length)
            digester.add_zeros(run.length)
        else:
            digester.add_data(memoryview(content[run.offset : run.offset + run.length]))
    return digester.finish()


def extents_of(content: bytes, granularity: int) -> list[Extent]:
    """Block status at ``granularity``: zero where a whole block is zeros, merged."""
    out: list[Extent] = []
    for offset in range(0, len(content), granularity):
        block = content[offset : offset + granularity]
        zero = block == bytes(len(block))
        if out and out[-1].zero == zero:
            last = out.pop()
            out.append(Extent(last.offset, last.length + len(block), zero))
        else:
            out.append(Extent(offset, len(block), zero))
    return out


def sample_content(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    data = bytearray(size)
    for _ in range(6):
        start = rng.randrange(size)
        length = rng.randrange(1, 3 * LEAF)
        chunk = os.urandom(min(length, size - start))
        data[start : start + len(chunk)] = chunk
    return bytes(data)


@pytest.mark.parametrize("size", [LEAF * 40, LEAF * 40 + 512, 3 * LEAF - 4096, 512])
@pytest.mark.parametrize("granularity", [512, 4096, LEAF, 4 * LEAF])
def test_the_digest_does_not_depend_on_how_zeros_are_stored(size: int, granularity: int) -> None:
    content = sample_content(size, seed=size + granularity)
    expected = reference_digest(content)
    assert digest_by_runs(content, extents_of(content, granularity)) == expected
    # nothing declared zero: every byte read (allocated zeros) gives the same digest
    assert digest_by_runs(content, [Extent(0, size, False)]) == expected


def test_a_changed_byte_changes_the_digest_and_says_where() -> None:
    content = bytearray(sample_content(LEAF * 64, seed=1))
    before = reference_digest(bytes(content))
    content[LEAF * 10 + 7] ^= 1
    after = digest_by_runs(bytes(content), extents_of(bytes(content), LEAF))
    assert after.hexdigest != before.hexdigest
    assert before.first_difference(after) == 0  # the first (only) GiB


def test_spans_tell_which_gib_differs() -> None:
    a = Digest(3 * SPAN, (b"a" * 32, b"b" * 32, b"c" * 32))
    b = Digest(3 * SPAN, (b"a" * 32, b"X" * 32, b"c" * 32))
    assert a.first_difference(b) == SPAN
    assert a.first_difference(a) is None
    assert copy_failure(a, b, None) == f"differs from it in the GiB at offset {SPAN}"
    assert copy_failure(a, a, None) is None
    assert copy_failure(a, a, "leaks 2") == "has faulty metadata (leaks 2)"
    shorter = Digest(2 * SPAN, a.spans[:2])
    assert copy_failure(a, shorter, None) == f"has {2 * SPAN} bytes for {3 * SPAN}"


def test_zero_runs_of_many_gib_cost_no_hashing_of_zeros() -> None:
    digester = DiskDigester(5 * SPAN + LEAF)
    digester.add_zeros(5 * SPAN)
    digester.add_data(memoryview(bytes(LEAF)))
    digest = digester.finish()
    assert len(digest.spans) == 6
    leaves = blake3(zero_digest(LEAF) * (SPAN // LEAF)).digest()
    assert digest.spans[:5] == (leaves,) * 5


def test_plan_runs_aligns_to_leaves_and_caps_reads() -> None:
    size = 10 * LEAF + 100
    extents = [
        Extent(0, 4096, False),  # data in the first leaf only
        Extent(4096, 3 * LEAF - 4096, True),
        Extent(3 * LEAF, 6 * LEAF, False),
        Extent(9 * LEAF, LEAF + 100, True),
    ]
    runs = list(plan_runs(extents, size, 4 * LEAF))
    assert runs == [
        Run(0, LEAF, False),
        Run(LEAF, 2 * LEAF, True),
        Run(3 * LEAF, 4 * LEAF, False),
        Run(7 * LEAF, 2 * LEAF, False),
        Run(9 * LEAF, LEAF + 100, True),
    ]


def test_plan_runs_refuses_gaps_and_short_extents() -> None:
    with pytest.raises(ValueError, match="not contiguous"):
        list(plan_runs([Extent(0, LEAF, False), Extent(2 * LEAF, LEAF, True)], 3 * LEAF, LEAF))
    with pytest.raises(ValueError, match="end at"):
        list(plan_runs([Extent(0, LEAF, False)], 3 * LEAF, LEAF))
    with pytest.raises(ValueError, match="multiple"):
        list(plan_runs([Extent(0, LEAF, False)], LEAF, 1000))


def test_the_digester_takes_whole_leaves_in_order() -> None:
    digester = DiskDigester(4 * LEAF)
    with pytest.raises(ValueError):
        digester.add_data(memoryview(bytes(100)))
    digester.add_zeros(LEAF)
    with pytest.raises(ValueError):
        digester.finish()


def test_leaf_digests_hashed_elsewhere_give_the_same_digest_and_zero_leaves() -> None:
    """A reader's thread hashes the leaves (``leaf_digests``); the digester takes them."""
    size = 3 * LEAF + 100  # the last leaf short
    content = os.urandom(LEAF) + bytes(LEAF) + os.urandom(LEAF) + bytes(100)
    whole = DiskDigester(size)
    expected_zero = whole.add_data(memoryview(content))
    given = DiskDigester(size)
    zero = given.add_digests(leaf_digests(content), size)
    assert zero == expected_zero == [False, True, False, True]
    assert given.finish() == whole.finish() == reference_digest(content)
    with pytest.raises(ValueError, match="3 leaf digests for 196708 bytes"):
        DiskDigester(size).add_digests(leaf_digests(content)[:3], size)


def test_nonzero_ranges() -> None:
    assert list(nonzero_ranges([True, False, False, True, False], 4 * LEAF + 10)) == [
        (LEAF, 3 * LEAF),
        (4 * LEAF, 4 * LEAF + 10),
    ]
    assert list(nonzero_ranges([True, True], 2 * LEAF)) == []
