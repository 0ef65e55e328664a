"""The console in a real Chromium (on a fake inventory and fake moves, no lab): log in,
follow the Inventory link, search, open a VM, move it from the Move button and watch its
job page finish with its chart drawn; a viewer sees no Move button; a self-service user
sees its project's VMs only; the layout at phone width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Shot
from pypdf import PdfReader
from support.console_fakes import PASSWORD, console_app, http_server, make_plan

from vmferry.service.settings import IMPORT_DIRS_SETTING
from vmferry.store.db import open_store

pytestmark = pytest.mark.browser


PLAN_ID: list[str] = []  # the module's plan, made by base_url


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("console")
    (root / "imports").mkdir()
    (root / "imports" / "legacy-web.raw").write_bytes(bytes(1 << 20))
    with open_store(f"sqlite:///{root / 'vmferry.db'}") as store, console_app(store) as app, \
            http_server(app) as url:  # fmt: skip
        store.set_setting(IMPORT_DIRS_SETTING, str(root / "imports"))
        PLAN_ID[:] = [make_plan(store)]
        yield url


def login(page: Any, base_url: str, name: str, path: str = "/") -> None:
    page.goto(base_url + path)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(base_url) + "/(?!login)"))


def test_login_inventory_search_vm_and_move(page: Any, base_url: str, shot: Shot) -> None:
    page.goto(base_url + "/")
    assert page.url.startswith(base_url + "/login")
    page.locator("input[name=username]").fill("operator")
    page.locator("input[name=password]").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    assert "Wrong user name or password" in page.get_by_role("alert").inner_text()
    shot(page, "login")
    login(page, base_url, "operator")
    assert page.get_by_role("heading", name="Fleet").is_visible()
    shot(page, "fleet")
    page.get_by_role("link", name=re.compile("Inventory")).click()
    rows = page.locator("table.inventory tbody th a")
    assert rows.all_inner_texts() == ["cache1", "db1", "db2", "web1", "web2"]
    page.get_by_label("Search").fill("debian")
    page.get_by_label("Search").press("Enter")
    page.wait_for_url(re.compile(r"/inventory\?q=debian"))
    assert rows.all_inner_texts() == ["web1"]
    page.goto(base_url + "/inventory?sort=memory&dir=desc")
    assert rows.all_inner_texts()[0] == "db1"
    shot(page, "inventory")
    page.goto(base_url + "/inventory?q=debian")
    page.get_by_role("link", name="web1").click()
    assert page.get_by_role("heading", name=re.compile("^web1")).is_visible()
    page.get_by_label("Destination", exact=True).first.select_option("kvm2")
    page.get_by_label("Strategy").select_option("live")
    page.get_by_label("Maximum downtime").select_option("500")
    page.locator("#profile-chart canvas").wait_for()  # the stored profile, drawn
    assert "Right-sizing" in page.locator("#profile-h").locator("..").inner_text()
    shot(page, "vm")
    page.get_by_role("button", name="Move web1").click()
    page.wait_for_url(re.compile(r"/jobs/"))
    page.locator("#job-status", has_text="completed").wait_for()
    chart = page.locator("#job-chart")
    chart.locator("canvas").wait_for()
    assert chart.get_attribute("data-points") == "3"
    assert page.locator('[data-step="transfer"] .step-state').inner_text() == "done"
    assert "pass 3: 40 MiB left" in page.locator("#events").inner_text()
    shot(page, "job")
    page.get_by_role("link", name="Jobs").click()
    assert page.locator("tbody tr").count() == 1
    shot(page, "jobs")


def test_live_job_page_follows_the_events(page: Any, base_url: str, tmp_path: Path) -> None:
    """A held move: the page shows it running, then the stream's events update it."""
    with open_store(f"sqlite:///{tmp_path / 'held.db'}") as store, \
            console_app(store, hold=True) as app, http_server(app) as url:  # fmt: skip
        login(page, url, "operator", "/vms/web1")
        page.get_by_role("button", name="Move web1").click()
        page.wait_for_url(re.compile(r"/jobs/"))
        assert page.locator("#job-status").inner_text() == "running"
        assert page.locator('[data-step="verification"] .step-state').inner_text() == "pending"
        page.locator("#job-chart canvas").wait_for()
        app.state.console_test_move.release.set()
        page.locator("#job-status", has_text="completed").wait_for()
        page.locator("#outcome").wait_for()  # the page reloaded with the outcome
        assert page.locator("#job-chart").get_attribute("data-points") == "3"


def test_viewer_has_no_move_button(page: Any, base_url: str) -> None:
    login(page, base_url, "viewer", "/vms/web1")
    assert page.get_by_role("heading", name=re.compile("^web1")).is_visible()
    assert page.locator("#move-button").count() == 0
    assert "a viewer only reads" in page.locator("#no-move").inner_text()
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    form = {"csrf_token": token, "to": "kvm2", "strategy": "live", "max_downtime_ms": "300"}
    forged = page.request.post(base_url + "/vms/web1/move", form=form)
    assert forged.status == 403
    assert "role.viewer.read-only" in forged.text()


def test_self_service_sees_its_project_only(page: Any, base_url: str) -> None:
    login(page, base_url, "selfweb", "/inventory")
    assert page.locator("table.inventory tbody th a").all_inner_texts() == ["web1", "web2"]


def test_phone_width_and_keyboard(page: Any, base_url: str, shot: Shot) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base_url + "/login")
    assert page.evaluate("document.activeElement.name") == "username"  # autofocus
    page.keyboard.type("viewer")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(base_url + "/")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1] + 1, widths  # nothing wider than the phone
    shot(page, "fleet-phone")


def test_plan_audit_import_and_a_plan_report_as_pdf(page: Any, base_url: str, shot: Shot,
                                                     tmp_path: Path) -> None:  # fmt: skip
    login(page, base_url, "admin", "/plans")
    page.get_by_role("link", name="nightly").click()
    assert page.get_by_role("heading", name="Wave 2").is_visible()
    assert page.locator("svg.gantt rect").count() == 6
    assert page.locator('tr[data-vm="db1"]').inner_text().count("completed") == 1
    shot(page, "plan")
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("User").fill("admin")
    page.get_by_role("button", name="Search").click()
    assert "console.login" in page.locator("table.audit").inner_text()
    shot(page, "audit")
    page.get_by_role("link", name="Import").click()
    page.get_by_label("Source", exact=True).select_option(index=1)
    page.get_by_label("VM name (default: the source's)").fill("legacy-web")
    page.get_by_role("button", name="Check (changes nothing)").click()
    page.locator("#import-outcome").wait_for()
    assert "<name>legacy-web</name>" in page.locator("pre.xml").inner_text()
    shot(page, "import")
    page.get_by_role("link", name="Reports").click()
    shot(page, "reports")
    with page.expect_download() as waiting:
        page.get_by_role("link", name="PDF of plan nightly").click()
    download = waiting.value
    assert download.suggested_filename == f"vmferry-plan-{PLAN_ID[0]}.pdf"
    saved = tmp_path / "plan.pdf"
    download.save_as(saved)
    text = "\n".join(p.extract_text() for p in PdfReader(saved).pages)
    assert "Plan report: nightly" in text
    assert "the furthest over its prediction: db1 (1.5 x)" in text
    page.goto(base_url + f"/reports/plans/{PLAN_ID[0]}")
    shot(page, "plan-report")


def test_a_running_plans_page_follows_its_vms(page: Any, tmp_path: Path) -> None:
    """htmx refreshes a running plan's page (under the CSP) as its VMs move."""
    from dataclasses import replace

    from vmferry.model.plan_run import ItemStatus, PlanStatus

    with open_store(f"sqlite:///{tmp_path / 'plan.db'}") as store, console_app(store) as app, \
            http_server(app) as url:  # fmt: skip
        plan_id = make_plan(store, moved=False)
        store.set_plan_status(plan_id, PlanStatus.RUNNING)
        login(page, url, "operator", f"/plans/{plan_id}")
        row = page.locator('tr[data-vm="web1"]')
        assert "pending" in row.inner_text()
        item = next(i for i in store.get_plan(plan_id).items if i.vm == "web1")
        store.save_plan_item(plan_id, replace(item, status=ItemStatus.RUNNING))
        page.locator('tr[data-vm="web1"] .status-running').wait_for(timeout=10_000)
        assert page.get_by_role("button", name="Pause").is_visible()
