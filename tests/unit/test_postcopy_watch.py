"""A post-copy stream that stalls or breaks off: the engine's words for it (pure)."""

from __future__ import annotations

from vmferry.engine.postcopy import StallWatch, split_reason, stall_warning
from vmferry.model.migration import ProgressSample

MIB = 2**20


def sample(at_s: float, sent_mib: int, left_mib: int = 100) -> ProgressSample:
    return ProgressSample(elapsed_ms=round(at_s * 1000), iteration=3,
                          memory_total_bytes=512 * MIB, memory_processed_bytes=sent_mib * MIB,
                          memory_remaining_bytes=left_mib * MIB, dirty_rate_bytes_s=0,
                          throughput_bytes_s=0, postcopy=True)  # fmt: skip


def feed(watch: StallWatch, points: list[tuple[float, int]]) -> list[tuple[float, str, float]]:
    """Each sample in turn, as the engine gives them: what was said, and when."""
    samples: list[ProgressSample] = []
    said = []
    for at_s, sent in points:
        samples.append(sample(at_s, sent))
        if (found := watch.observe(samples)) is not None:
            said.append((at_s, *found))
    return said


def test_a_stall_is_said_when_it_reaches_the_timeout_and_when_data_moves_again() -> None:
    watch = StallWatch("kvm1", "kvm2", stall_timeout_s=10)
    # data moves until 5 s, then nothing until 27 s
    points = [(t * 0.5, min(t, 10) * 5) for t in range(0, 54)] + [(27.0, 60), (27.5, 65)]
    said = feed(watch, points)
    assert [(at, round(seconds, 1)) for at, _, seconds in said] == [(15.0, 10.0), (27.0, 22.0)]
    assert said[0][1] == (
        "post-copy stream stalled: no data moved for 10 s; the guest waits on kvm2 for the pages "
        "it touches of the 100 MiB still on kvm1. A post-copy move cannot be aborted: vmferry "
        "waits for the link, as TCP does"
    )
    assert said[1][1] == "post-copy stream moving again after 22 s"
    assert watch.longest_s == 22.0
    assert stall_warning(watch, []) == (
        "the post-copy stream stalled for up to 22 s: the guest waited on kvm2 that long for "
        "memory still on kvm1"
    )


def test_a_pause_shorter_than_the_timeout_is_not_a_stall() -> None:
    watch = StallWatch("kvm1", "kvm2", stall_timeout_s=10)
    points = [(0.0, 0), (1.0, 5), (10.5, 5), (11.0, 10), (12.0, 15)]
    assert feed(watch, points) == []
    assert stall_warning(watch, [sample(12.0, 15)]) is None


def test_a_stall_still_going_when_the_move_ends_is_warned_with_its_length_so_far() -> None:
    watch = StallWatch("kvm1", "kvm2", stall_timeout_s=10)
    points = [(0.0, 0), (1.0, 5), (11.0, 5), (31.0, 5)]
    said = feed(watch, points)
    assert [at for at, _, _ in said] == [11.0]  # said once, not at every sample
    samples = [sample(at, sent) for at, sent in points]
    assert watch.ongoing_s(samples) == 30.0
    assert "stalled for up to 30 s" in (stall_warning(watch, samples) or "")


def test_a_split_vm_names_both_hosts_and_its_recovery() -> None:
    works = split_reason("web1", "kvm1", "kvm2", "job 'migration in' failed in post-copy phase",
                         "10.0.0", resume_crashes=False)  # fmt: skip
    assert works == (
        "post-copy broke off (job 'migration in' failed in post-copy phase): web1's memory is "
        "split between kvm1 and kvm2, which each hold part of it; neither copy can run alone, "
        "so vmferry destroys neither. Once the migration link works, libvirt's post-copy resume "
        "finishes the move (`virsh migrate --postcopy --postcopy-resume` on kvm1, with the "
        "move's options)"
    )
    crashes = split_reason("web1", "kvm1", "kvm2", None, "11.3.0", resume_crashes=True)
    assert crashes.startswith("post-copy broke off: web1's memory is split between kvm1 and")
    assert crashes.endswith(
        "libvirt 11.3.0 on kvm2 crashes on it (its daemon, not the guests): the move can be "
        "resumed only with another libvirt there"
    )
