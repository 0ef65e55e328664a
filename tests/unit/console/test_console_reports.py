"""The console's Audit, Plans and Reports pages (TestClient on SQLite): the audit trail's
search, who may read it, a plan's waves, Gantt and predicted against actual, its actions by
role, and the migration and plan reports as pages and as PDFs printed by Chromium."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader
from support.console_fakes import Console, console, form_token, make_plan

from vmferry.model.plan_run import PlanStatus
from vmferry.store.db import Store


@pytest.fixture
def ui(sqlite_store: Store, tmp_path: Path) -> Iterator[Console]:
    with console(sqlite_store) as served:
        yield served


def _move(ui: Console, vm: str = "web1", to: str = "kvm2") -> str:
    token = ui.csrf(f"/vms/{vm}")
    started = ui.client.post(f"/vms/{vm}/move", data={
        "csrf_token": token, "to": to, "strategy": "live", "max_downtime_ms": "300"},
        follow_redirects=False)  # fmt: skip
    job_id = started.headers["location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while not ui.store.get_job(job_id).status.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    return job_id


def _pdf_text(body: bytes) -> str:
    assert body.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages)


def test_audit_search_by_user_vm_action_and_time(ui: Console) -> None:
    ui.login("operator")
    _move(ui)
    ui.client.post("/vms/db1/move", data={"csrf_token": "forged"})
    ui.client.cookies.clear()
    ui.login("admin")
    page = ui.client.get("/audit?user=operator")
    rows = re.findall(r"<tr><td><time>[^<]+</time></td><td>(\w+)</td><td>[^<]*</td>"
                      r"<td>([\w.]+)</td><td>(\w*)</td>", page.text)  # fmt: skip
    assert rows == [("operator", "console.csrf", "db1"), ("operator", "migrate", "web1"),
                    ("operator", "console.login", "")]  # fmt: skip
    assert "3 entries" in page.text
    only = ui.client.get("/audit?vm=web1&action=migrate")
    assert "1 entries" in only.text
    assert "1 entries" in ui.client.get("/audit?user=operator&result=refused").text
    assert "0 entries" in ui.client.get("/audit?user=operator&until=2000-01-01T00:00:00Z").text
    assert "0 entries" in ui.client.get("/audit?user=operator&since=2999-01-01").text
    bad = ui.client.get("/audit?since=yesterday")
    assert bad.status_code == 200 and "give an ISO 8601 time" in bad.text


def test_audit_is_refused_to_self_service(ui: Console) -> None:
    ui.login("selfweb")
    refused = ui.client.get("/audit")
    assert refused.status_code == 403 and "self-service.fleet-wide" in refused.text


def test_plan_page_waves_gantt_and_actions_by_role(ui: Console) -> None:
    plan_id = make_plan(ui.store)
    ui.login("viewer")
    listed = ui.client.get("/plans")
    assert f'href="/plans/{plan_id}">nightly' in listed.text
    page = ui.client.get(f"/plans/{plan_id}")
    assert "Wave 1" in page.text and "Wave 2" in page.text
    assert page.text.count("<rect") == 6  # a track, a predicted and an actual bar per VM
    assert "db1: predicted 20 to 50 s, actual 19.0 to 64.0 s" in page.text
    assert "predicted makespan 50 s · actual 64.0 s" in page.text
    assert "/cancel" not in page.text  # a viewer has no plan actions
    pending = make_plan(ui.store, moved=False)
    token = form_token(ui.client.get(f"/plans/{pending}").text)
    refused = ui.client.post(f"/plans/{pending}/cancel", data={"csrf_token": token})
    assert refused.status_code == 403
    assert ui.store.get_plan(pending).status is PlanStatus.PENDING
    ui.client.cookies.clear()
    ui.login("operator")
    page = ui.client.get(f"/plans/{pending}")
    assert "Run the plan" in page.text and "Cancel</button>" in page.text
    cancelled = ui.client.post(f"/plans/{pending}/cancel", data={"csrf_token": form_token(
        page.text)}, follow_redirects=False)  # fmt: skip
    assert cancelled.status_code == 303
    assert ui.store.get_plan(pending).status is PlanStatus.CANCELLED
    again = ui.client.post(f"/plans/{pending}/pause", data={"csrf_token": form_token(page.text)})
    assert again.status_code == 422 and 'role="alert"' in again.text


def test_plan_report_page_and_pdf(ui: Console) -> None:
    plan_id = make_plan(ui.store)
    ui.login("viewer")
    listed = ui.client.get("/reports")
    assert f'href="/reports/plans/{plan_id}.pdf"' in listed.text
    page = ui.client.get(f"/reports/plans/{plan_id}")
    assert "Plan report: nightly" in page.text
    assert "the furthest over its prediction: db1 (1.5 x)" in page.text
    pdf = ui.client.get(f"/reports/plans/{plan_id}.pdf")
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == (
        f'attachment; filename="vmferry-plan-{plan_id}.pdf"')  # fmt: skip
    text = _pdf_text(pdf.content)
    assert "Plan report: nightly" in text
    assert "db1" in text and "web1" in text and "Predicted makespan" in text


def test_migration_report_page_and_pdf(ui: Console) -> None:
    ui.login("operator")
    job_id = _move(ui)
    page = ui.client.get(f"/reports/jobs/{job_id}")
    assert "Migration report: web1" in page.text
    assert "<td>900.0</td><td>20.0</td>" in page.text  # the first pass, from its event
    text = _pdf_text(ui.client.get(f"/reports/jobs/{job_id}.pdf").content)
    assert "Migration report: web1" in text and "kvm1 → kvm2" in text


def test_self_service_cannot_read_another_projects_job_report(ui: Console) -> None:
    ui.login("operator")
    job_id = _move(ui, "db1", "kvm1")
    ui.client.cookies.clear()
    ui.login("selfweb")
    assert ui.client.get(f"/reports/jobs/{job_id}").status_code == 404
    assert job_id not in ui.client.get("/reports").text
