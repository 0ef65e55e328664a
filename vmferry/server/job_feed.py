"""One poll of the store per followed job, shared by everyone who follows it.

``GET /jobs/{id}/events`` used to read the whole job, all its events included, every
``event_poll_s`` for every client: 50 clients on 10 jobs cost 44 % of a core
(docs/performance.md). A :class:`JobFeeds` keeps one :class:`JobFeed` per followed job:
whichever follower finds nobody polling reads what is new (:meth:`Store.job_after`, the
events after those already seen), and the others wait for it. No background task: when the
polling follower goes away, the next one to wake takes over; the feed is forgotten when its
last follower leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio

from vmferry.model.migration import Job, JobEvent

__all__ = ["JobFeed", "JobFeeds", "JobSource"]


class JobSource(Protocol):
    """Where a feed reads (the store: :meth:`vmferry.store.db.Store.job_after`)."""

    def job_after(self, job_id: str, known: int) -> tuple[Job, tuple[JobEvent, ...]]: ...


@dataclass(eq=False)
class JobFeed:
    """What is known of one job: its state and its events so far."""

    job: Job
    events: list[JobEvent]
    followers: int = 0
    polling: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)

    def _publish(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class JobFeeds:
    """The feeds of the jobs followed now (one event loop: the server's)."""

    def __init__(self, source: JobSource, poll_s: float) -> None:
        self.source = source
        self.poll_s = poll_s
        self._feeds: dict[str, JobFeed] = {}
        self.reads = 0  # store reads, for tests and the benchmark

    async def follow(self, job: Job, after: int = 0) -> AsyncIterator[tuple[int, JobEvent] | Job]:
        """Each event from index ``after`` on, as ``(index, event)``, as it is recorded; then
        the finished job (without its events). ``job`` is the job as the caller read it."""
        feed = self._feeds.get(job.id)
        if feed is None:
            feed = JobFeed(replace(job, events=()), list(job.events))
            self._feeds[job.id] = feed
        feed.followers += 1
        sent = max(0, after)
        try:
            while True:
                events = feed.events
                for index in range(sent, len(events)):
                    yield index, events[index]
                sent = max(sent, len(events))
                if feed.job.status.finished:
                    yield feed.job
                    return
                if feed.polling:
                    await feed.changed.wait()
                    continue
                feed.polling = True
                try:
                    await anyio.sleep(self.poll_s)
                    self.reads += 1
                    state, new = await anyio.to_thread.run_sync(
                        self.source.job_after, job.id, len(feed.events)
                    )
                    feed.job = state
                    feed.events.extend(new)
                finally:
                    feed.polling = False
                    feed._publish()  # the others read what is new, or one of them polls
        finally:
            feed.followers -= 1
            if feed.followers == 0 and self._feeds.get(job.id) is feed:
                del self._feeds[job.id]
