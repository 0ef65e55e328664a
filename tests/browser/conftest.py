"""Browser tests: the console in Debian's Chromium (/usr/bin/chromium) driven by
Playwright's Python package (never `playwright install`: Playwright is pointed at the
system's Chromium). ``shots`` saves a page's screenshot into docs/console/ when
VMFERRY_CONSOLE_SHOTS=1 (`make console-shots`); otherwise nothing is written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from support.browser import chromium

SHOTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "console"


class Shot(Protocol):
    def __call__(self, page: Any, name: str, *, full_page: bool = True) -> None: ...


# Per module, never per session: Playwright's sync API runs an asyncio loop in this thread
# until it stops, and every later test that calls asyncio.run (the queue's, the console
# lab test's own Playwright) would fail while it runs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))

    def static_failed(response: Any) -> None:
        if "/static/" in response.url and response.status >= 400:
            errors.append(f"{response.url}: {response.status}")

    opened.on("response", static_failed)
    opened.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text
              else None)  # fmt: skip
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"the page's JavaScript, static files or CSP failed: {errors}"


@pytest.fixture
def shot() -> Shot:
    wanted = os.environ.get("VMFERRY_CONSOLE_SHOTS") == "1"

    def take(page: Any, name: str, *, full_page: bool = True) -> None:
        if wanted:
            SHOTS_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS_DIR / f"{name}.png"), full_page=full_page)

    return take
