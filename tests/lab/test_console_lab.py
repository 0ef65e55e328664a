"""The web console against the lab, in Debian's Chromium: a real `vmferry server` on the
module's store, an operator logs in with the password `vmferry users add --password-stdin`
set, finds the guest through the Inventory link, moves it live from its Move button, and
watches the job page follow the move over Server-Sent Events until it reads completed,
with the transfer's chart drawn from the engine's progress samples. One guest, one lab."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.browser import chromium
from support.line_reader import vmferry_server

from vmferry.lab.state import GuestRecord, LabState
from vmferry.store.db import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves, pytest.mark.browser]

GUEST = "cons1"
PASSWORD = "lab console password"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def server(lab: LabState) -> Iterator[str]:
    """`vmferry server` on the module's store, on a free loopback port: its URL."""
    with vmferry_server(dict(os.environ)) as served:
        yield served.url


def test_a_live_move_from_the_move_button_is_watched_to_completed(
    lab: LabState, lab_guests: Callable[..., GuestRecord], server: str, browser: Any
) -> None:
    lab_guests(GUEST, "kvm1", memory_mb=256, working_set_mb=64, dirty_mb_s=4)
    added = subprocess.run(
        [sys.executable, "-m", "vmferry.cli.main", "users", "add", "ops", "--role", "operator",
         "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server + "/")
        page.locator("input[name=username]").fill("ops")
        page.locator("input[name=password]").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name=re.compile("Inventory")).click()
        page.get_by_label("Search").fill(GUEST)
        page.get_by_label("Search").press("Enter")
        page.get_by_role("link", name=GUEST, exact=True).click()
        assert page.get_by_role("heading", name=re.compile(f"^{GUEST}")).is_visible()
        page.locator("#move-to").select_option("kvm2")
        page.locator("#move-strategy").select_option("live")
        page.locator("#move-downtime").select_option("500")
        page.get_by_role("button", name=f"Move {GUEST}").click()
        page.wait_for_url(re.compile(r"/jobs/[^/]+$"))
        job_id = page.url.rsplit("/", 1)[1]
        page.locator("#job-status", has_text="completed").wait_for(timeout=240_000)
        page.locator("#outcome").wait_for()
        chart = page.locator("#job-chart")
        chart.locator("canvas").wait_for()
        points = int(chart.get_attribute("data-points") or "0")
        assert points >= 1
        for step in ("checks", "transfer", "verification"):
            state = page.locator(f'[data-step="{step}"] .step-state').inner_text()
            assert state == "done", (step, state)
        assert "Running on the destination" in page.locator("#outcome").inner_text()
    finally:
        context.close()
    assert errors == [], errors
    with open_store() as store:
        job = store.get_job(job_id)
    assert job.status.value == "completed"
    assert job.destination == "kvm2"
    samples = [e for e in job.events if e.kind == "progress" and "memory_remaining_bytes" in e.data]
    assert len(samples) == points
    print(
        f"console lab: {GUEST} moved live in {job.result.total_time_ms if job.result else '?'}"
        f" ms, {points} progress samples charted"
    )
