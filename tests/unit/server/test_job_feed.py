"""The job feeds: one store read per poll for all the followers of a job."""

from __future__ import annotations

from dataclasses import replace

import anyio

from vmferry.model.migration import Job, JobEvent, JobStatus, MigrationOptions
from vmferry.server.job_feed import JobFeeds


def _event(n: int) -> JobEvent:
    return JobEvent(at=f"2026-12-04T00:00:{n:02d}+00:00", kind="progress", message=f"e{n}")


class Source:
    """A job that gains an event at each read and finishes at the fourth."""

    def __init__(self) -> None:
        self.job = Job(id="j1", kind="migrate", vm="web1", source="a", destination="b",
                       status=JobStatus.RUNNING, created_at="", updated_at="",
                       options=MigrationOptions(), events=(_event(0),))  # fmt: skip
        self.events = [_event(0)]
        self.reads: list[int] = []

    def job_after(self, job_id: str, known: int) -> tuple[Job, tuple[JobEvent, ...]]:
        assert job_id == "j1"
        self.reads.append(known)
        self.events.append(_event(len(self.events)))
        if len(self.reads) == 4:
            self.job = replace(self.job, status=JobStatus.COMPLETED)
        return replace(self.job, events=()), tuple(self.events[known:])


def test_followers_share_one_read_per_poll_and_each_sees_every_event() -> None:
    source = Source()
    feeds = JobFeeds(source, poll_s=0.01)
    seen: dict[str, list[object]] = {"a": [], "b": [], "c": []}

    async def follow(name: str, after: int) -> None:
        async for item in feeds.follow(source.job, after):
            seen[name].append(item if isinstance(item, Job) else item[0])

    async def main() -> None:
        with anyio.fail_after(5):  # a follower left waiting would hang: fail instead
            await run()

    async def run() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(follow, "a", 0)
            group.start_soon(follow, "b", 0)
            group.start_soon(follow, "c", 3)  # resumed after event 2 (Last-Event-ID: 2)

    anyio.run(main)
    assert source.reads == [1, 2, 3, 4]  # four polls for three followers, each reading the new
    for name, start in (("a", 0), ("b", 0), ("c", 3)):
        assert seen[name][:-1] == list(range(start, 5))
        end = seen[name][-1]
        assert isinstance(end, Job) and end.status is JobStatus.COMPLETED
    assert feeds._feeds == {}  # forgotten when the last follower left


def test_a_follower_that_leaves_while_polling_hands_the_poll_on() -> None:
    source = Source()
    feeds = JobFeeds(source, poll_s=0.05)
    got: list[object] = []

    async def leaver() -> None:
        with anyio.move_on_after(0.02):  # gone in the middle of its first poll's wait
            async for _ in feeds.follow(source.job):
                pass

    async def stayer() -> None:
        async for item in feeds.follow(source.job):
            got.append(item if isinstance(item, Job) else item[0])

    async def main() -> None:
        with anyio.fail_after(5):  # a follower left waiting would hang: fail instead
            await run()

    async def run() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(leaver)
            await anyio.sleep(0.001)
            group.start_soon(stayer)

    anyio.run(main)
    assert got[:-1] == [0, 1, 2, 3, 4]
    assert isinstance(got[-1], Job) and got[-1].status is JobStatus.COMPLETED
    assert source.reads == [1, 2, 3, 4]
