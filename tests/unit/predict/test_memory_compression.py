"""The compression ratio of a guest's memory sample, and where the sample is read."""

from __future__ import annotations

import os

import pytest

from vmferry.drivers.guest_memory import (
    CHUNK_BYTES,
    HIGH_RAM,
    LOW_RAM,
    MOST_LOW_RAM,
    sample_addresses,
)
from vmferry.predict.compression import PAGE_BYTES, zstd_sample

MIB = 2**20


def test_zero_pages_are_left_out_and_text_compresses() -> None:
    text = (b"vmferry moves virtual machines " * 200)[:PAGE_BYTES]
    chunk = bytes(PAGE_BYTES) * 8 + text * 8  # half zero pages
    sample = zstd_sample([chunk])
    assert sample.sampled_bytes == 16 * PAGE_BYTES
    assert sample.nonzero_bytes == 8 * PAGE_BYTES
    assert sample.ratio < 0.05


def test_random_memory_does_not_compress() -> None:
    sample = zstd_sample([os.urandom(CHUNK_BYTES) for _ in range(4)])
    assert sample.nonzero_bytes == 4 * CHUNK_BYTES
    assert 1.0 <= sample.ratio < 1.01  # zstd's frame costs a few bytes


def test_a_zero_sample_counts_as_incompressible() -> None:
    assert zstd_sample([bytes(CHUNK_BYTES)]).ratio == 1.0
    assert zstd_sample([]).ratio == 1.0


def test_samples_are_spread_over_ram_and_aligned() -> None:
    found = sample_addresses(512 * MIB, 128)
    assert len(found) == 128 and found == sorted(set(found))
    assert all(a % CHUNK_BYTES == 0 and a + CHUNK_BYTES <= 512 * MIB for a in found)
    assert found[0] < 4 * MIB and found[-1] > 508 * MIB - CHUNK_BYTES


def test_only_what_is_ram_on_every_machine_type_is_sampled() -> None:
    """A 6 GiB guest: its first 2 GiB (q35 maps at least that below the PCI hole), and from
    4 GiB on the 2.5 GiB it has beyond 3.5 GiB (i440fx maps that much below)."""
    found = sample_addresses(6 * 2**30, 90)
    low = [a for a in found if a < LOW_RAM]
    high = [a for a in found if a >= HIGH_RAM]
    assert len(low) + len(high) == 90  # nothing in the hole, nor between 2 and 4 GiB
    assert len(low) == pytest.approx(40, abs=1)  # 2 of the 4.5 GiB sampled
    assert max(high) + CHUNK_BYTES <= HIGH_RAM + (6 * 2**30 - MOST_LOW_RAM)
    # a 3 GiB guest: nothing above 4 GiB is sure to be RAM
    assert max(sample_addresses(3 * 2**30, 64)) < LOW_RAM


def test_nothing_to_sample() -> None:
    assert sample_addresses(0, 128) == [] and sample_addresses(512 * MIB, 0) == []
