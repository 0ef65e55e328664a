"""Warm-incremental in the prediction and the choice (pure): the modelled rounds follow the
engine's stop rule, the stop depends on the last round and not on the disks' size, and a VM
whose disks every move copies is moved live with --copy-storage, warm-incremental or cold."""

from __future__ import annotations

from itertools import pairwise

import pytest

from vmferry.model.migration import MigrationOptions, Strategy
from vmferry.predict.incremental import (
    CUTOVER_MS,
    DiskLoad,
    cold_copy_ms,
    predict_incremental,
)
from vmferry.predict.model import Calibration, PredictInputs, Prediction, predict
from vmferry.predict.strategy import (
    LocalDisks,
    MoveStrategy,
    choose_with_disks,
    incremental_stop,
    with_choice,
)

MIB = 2**20
GIB = 2**30
RATE = 50 * MIB  # bytes/s the copy goes at
CAL = Calibration(efficiency=1.0, setup_ms=400, switchover_ms=100, bytes_factor=1.0)


def test_an_idle_disk_needs_the_whole_copy_then_one_empty_round() -> None:
    p = predict_incremental(DiskLoad(GIB, 0.0), RATE, 300)
    assert [r.copied_bytes for r in p.rounds] == [GIB, 0]
    assert p.why == "round 1 found nothing changed"
    assert (p.last.copied_bytes, p.stop_ms) == (0, CUTOVER_MS)
    assert p.total_ms == round(GIB / RATE * 1000) + CUTOVER_MS
    assert p.copied_bytes == GIB


def test_rounds_shrink_with_the_write_rate_and_stop_once_one_fits_the_downtime() -> None:
    p = predict_incremental(DiskLoad(GIB, 5 * MIB), RATE, 300)  # writes at a tenth of the copy
    sizes = [r.copied_bytes for r in p.rounds]
    assert sizes[0] == GIB and all(b < a / 4 for a, b in pairwise(sizes))
    assert p.why is not None and "within --max-downtime-ms 300" in p.why
    assert p.last.copied_bytes == round(5 * MIB * p.rounds[-1].seconds)
    assert p.stop_ms < 300 + CUTOVER_MS


def test_the_stop_is_the_last_round_not_the_disk_size() -> None:
    small = predict_incremental(DiskLoad(GIB, 5 * MIB), RATE, 300)
    big = predict_incremental(DiskLoad(16 * GIB, 5 * MIB), RATE, 300)
    assert big.total_ms > 10 * small.total_ms
    assert abs(big.stop_ms - small.stop_ms) <= 300
    assert cold_copy_ms(DiskLoad(16 * GIB, 0), RATE) > 50 * big.stop_ms


def test_a_guest_writing_as_fast_as_the_copy_stops_the_rounds_early() -> None:
    p = predict_incremental(DiskLoad(GIB, 45 * MIB), RATE, 300)
    assert len(p.rounds) == 2 and "not a quarter less" in p.why
    assert p.last.copied_bytes > 700 * MIB  # the stop is long: little was gained


def test_writes_never_count_for_more_than_the_disk() -> None:
    p = predict_incremental(DiskLoad(64 * MIB, 500 * MIB), RATE, 300)
    assert max(r.copied_bytes for r in (*p.rounds, p.last)) == 64 * MIB


def test_a_copy_rate_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        predict_incremental(DiskLoad(GIB, 0.0), 0, 300)


def prediction(dirty_share: float) -> Prediction:
    return predict(PredictInputs(memory_bytes=512 * MIB, dirty_rate_bytes_s=dirty_share * RATE,
                                 link_bytes_s=RATE, zero_fraction=0.5,
                                 downtime_limit_ms=300), CAL)  # fmt: skip


def test_a_quiet_vm_on_local_disks_moves_live_with_copy_storage() -> None:
    choice = choose_with_disks(prediction(0.1), LocalDisks(DiskLoad(GIB, MIB)), 300)
    assert (choice.strategy, choice.copy_storage) == (MoveStrategy.LIVE, True)
    assert "--copy-storage" in choice.reason and "1024 MiB" in choice.reason
    chosen = with_choice(MigrationOptions(Strategy.LIVE, 300), choice)
    assert (chosen.strategy, chosen.copy_storage) == (Strategy.LIVE, True)


def test_a_disk_written_faster_than_a_mirror_keeps_up_goes_warm_incremental() -> None:
    choice = choose_with_disks(prediction(0.1), LocalDisks(DiskLoad(GIB, 40 * MIB)), 300)
    assert choice.strategy is MoveStrategy.WARM_INCREMENTAL and not choice.copy_storage
    assert "faster than a mirror" in choice.reason and "cold would stop it" in choice.reason
    chosen = with_choice(MigrationOptions(Strategy.LIVE, 300), choice)
    assert chosen.strategy is Strategy.WARM_INCREMENTAL


def test_a_vm_that_does_not_converge_stops_for_the_last_round_and_its_boot() -> None:
    load = DiskLoad(GIB, 5 * MIB)
    choice = choose_with_disks(prediction(1.5), LocalDisks(load), 300, boot_ms=4000)
    assert choice.strategy is MoveStrategy.WARM_INCREMENTAL
    assert "does not converge" in choice.reason and "4.0 s in its rehearsal" in choice.reason
    stop = predict_incremental(load, RATE, 300).stop_ms
    assert choice.predicted_downtime_ms == stop + 4000
    assert choice.predicted_downtime_ms < cold_copy_ms(load, RATE) + 4000


def test_refused_live_and_incremental_leave_cold_with_both_reasons() -> None:
    disks = LocalDisks(DiskLoad(GIB, 0.0), live_refused="migration.tcg-lost-writes",
                       incremental_refused="disk vda is raw")  # fmt: skip
    choice = choose_with_disks(prediction(0.1), disks, 300, boot_ms=2000)
    assert choice.strategy is MoveStrategy.COLD
    assert "migration.tcg-lost-writes" in choice.reason and "disk vda is raw" in choice.reason
    assert choice.predicted_downtime_ms == cold_copy_ms(DiskLoad(GIB, 0.0), RATE) + 2000


def test_a_named_warm_incremental_move_says_what_it_stops_for() -> None:
    words, ms = incremental_stop(prediction(0.1), DiskLoad(GIB, 5 * MIB), 300)
    assert "1024 MiB" in words and "rounds" in words and words.endswith("then it boots")
    assert ms == predict_incremental(DiskLoad(GIB, 5 * MIB), RATE, 300).stop_ms
    words, ms = incremental_stop(prediction(0.1), None, 300, boot_ms=3000)
    assert "not measured" in words and ms == CUTOVER_MS + 3000
