"""What every request handler reaches: the store, the inventory source, the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from vmferry.model.migration import MigrationOptions
from vmferry.predict.strategy import StrategyChoice
from vmferry.server.job_feed import JobFeeds
from vmferry.server.moves import Mover
from vmferry.service.fleet import Fleet
from vmferry.store.db import Store

InventorySource = Callable[[Store, str | None], Fleet]  # (store, host or None) -> Fleet
ChooseFn = Callable[[str, str, MigrationOptions], StrategyChoice]  # (vm, to, options)


@dataclass(frozen=True)
class ServerContext:
    store: Store
    inventory: InventorySource
    event_poll_s: float = 0.5  # how often a job's event stream looks for new events
    jobs_in_process: bool = True  # SQLite: jobs started through the API run in the server
    moves: Mover | None = None  # starts moves here or queues them (None: refused)
    choose: ChooseFn | None = None  # `auto`'s choice (None: service.auto_strategy's)
    feeds: JobFeeds = field(init=False)  # the followed jobs' shared polls

    def __post_init__(self) -> None:
        object.__setattr__(self, "feeds", JobFeeds(self.store, self.event_poll_s))


def context_of(request: Request) -> ServerContext:
    """The server's context (a FastAPI dependency)."""
    context: ServerContext = request.app.state.vmferry
    return context


Context = Annotated[ServerContext, Depends(context_of)]
