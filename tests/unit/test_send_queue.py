"""The source's send queue bounded for a live move and put back after: the pure decisions,
and the service's events with the sysctl faked (the lab test sets the real one)."""

from __future__ import annotations

import pytest

from vmferry.drivers.host_exec import HostExec
from vmferry.engine.send_queue import SYSCTL, TARGET_BYTES, SendQueue, restore_to, tune_to
from vmferry.errors import ToolError
from vmferry.model import Host
from vmferry.model.migration import MigrationOptions
from vmferry.service import send_queue
from vmferry.store.db import Store

UNLIMITED = 4294967295


def test_an_unlimited_queue_is_bounded_and_a_tighter_one_kept() -> None:
    assert tune_to(UNLIMITED) == TARGET_BYTES == 128 * 1024
    assert tune_to(TARGET_BYTES) is None
    assert tune_to(16384) is None  # an administrator's lower bound stays


def test_the_old_value_comes_back_unless_another_move_runs_or_someone_changed_it() -> None:
    change = SendQueue("kvm1", UNLIMITED, TARGET_BYTES)
    assert restore_to(change, TARGET_BYTES, others_moving=False) == UNLIMITED
    assert restore_to(change, TARGET_BYTES, others_moving=True) is None
    assert restore_to(change, 65536, others_moving=False) is None


class FakeSysctl:
    def __init__(self, value: int, fail: bool = False) -> None:
        self.value, self.fail, self.writes = value, fail, []

    def read_int(self, host: HostExec, name: str, timeout_s: float) -> int:
        assert (name, timeout_s) == (SYSCTL, send_queue.TIMEOUT_S)
        if self.fail:
            raise ToolError("`sysctl -n net.ipv4.tcp_notsent_lowat` on kvm1 failed: denied")
        return self.value

    def write(self, host: HostExec, name: str, value: int, timeout_s: float) -> None:
        assert timeout_s == send_queue.TIMEOUT_S
        self.writes.append(value)
        self.value = value


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSysctl:
    found = FakeSysctl(UNLIMITED)
    monkeypatch.setattr(send_queue, "sysctl", found)
    return found


KVM1 = Host("kvm1", "qemu+ssh://kvm1/system", shell="netns:vmf-test")


def _settings(store: Store, job_id: str) -> list[str]:
    return [e.message for e in store.get_job(job_id).events if e.kind in ("setting", "note")]


def test_bounded_for_the_move_and_restored(store: Store, fake: FakeSysctl) -> None:
    job = store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    notes: list[str] = []
    change = send_queue.bound_send_queue(KVM1, store, job.id, notes.append)
    assert change == SendQueue("kvm1", UNLIMITED, TARGET_BYTES) and fake.value == TARGET_BYTES
    send_queue.restore_send_queue(change, KVM1, store, job.id)
    assert fake.writes == [TARGET_BYTES, UNLIMITED]
    assert _settings(store, job.id) == [
        f"send queue of kvm1 bounded for the move: {SYSCTL} {UNLIMITED} -> {TARGET_BYTES} "
        "(the guest's pause waits for what the socket still holds)",
        f"send queue of kvm1 restored: {SYSCTL} {UNLIMITED}",
    ]
    assert notes == _settings(store, job.id)[:1]


def test_left_bounded_while_another_move_from_the_host_runs(store: Store, fake: FakeSysctl) -> None:
    job = store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    store.create_job("migrate", "web2", "kvm1", "kvm3", MigrationOptions())  # still pending
    change = send_queue.bound_send_queue(KVM1, store, job.id, lambda m: None)
    assert change is not None
    send_queue.restore_send_queue(change, KVM1, store, job.id)
    assert fake.value == TARGET_BYTES
    assert _settings(store, job.id)[-1] == (
        f"send queue of kvm1 left at {TARGET_BYTES}: another move from it runs"
    )


def test_no_shell_nothing_run_and_a_failure_is_a_note(store: Store, fake: FakeSysctl) -> None:
    job = store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    bare = Host("kvm1", "qemu+ssh://kvm1/system")
    assert send_queue.bound_send_queue(bare, store, job.id, lambda m: None) is None
    assert fake.writes == [] and _settings(store, job.id) == []
    fake.fail = True
    assert send_queue.bound_send_queue(KVM1, store, job.id, lambda m: None) is None
    assert _settings(store, job.id) == [
        "send queue of kvm1 not bounded: `sysctl -n net.ipv4.tcp_notsent_lowat` on kvm1 "
        "failed: denied"
    ]
