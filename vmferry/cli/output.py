"""Shared output helpers: JSON for machines, Rich for people, errors on stderr."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from vmferry.errors import BadInputError
from vmferry.model.jsonable import to_jsonable

console = Console()
err_console = Console(stderr=True)


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (plain, no colour, one document)."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


class _PlanEventLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def message(self) -> str: ...


def show_plan_event(event: _PlanEventLike) -> None:
    """A plan's event as a progress line on stderr: one per move's step, not per memory
    pass (``progress``)."""
    if event.kind != "progress":
        err_console.print(f"[dim]•[/dim] {event.message}", highlight=False)


def progress_printer(enabled: bool = True) -> Any:
    """A callback that prints one progress line to stderr (so --json stdout stays clean)."""

    def show(message: str) -> None:
        if enabled:
            err_console.print(f"[dim]•[/dim] {message}", highlight=False)

    return show


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
