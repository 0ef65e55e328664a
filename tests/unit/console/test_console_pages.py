"""The console's pages and forms through FastAPI's TestClient on SQLite (a fake inventory,
no libvirt): login and its CSRF, the security headers, the role rules on the Move form and
its POST, self-service, the inventory's search, sort and pages, the job page and its
event stream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from support.console_fakes import FLEET, Console, console, form_token, vm

from vmferry.console.session import CSP, SESSION_COOKIE
from vmferry.model.migration import JobStatus, MigrationOptions
from vmferry.service import audit as audit_service
from vmferry.store.db import Store


@pytest.fixture
def ui(sqlite_store: Store) -> Iterator[Console]:
    with console(sqlite_store) as served:
        yield served


def _finished(store: Store, job_id: str) -> JobStatus:
    """The job's status once the move's thread finished it (at most 10 s)."""
    deadline = time.monotonic() + 10
    while not (job := store.get_job(job_id)).status.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    return job.status


def _names(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/vms/[^"]+">([^<]+)</a>', html)


def test_pages_need_a_login_and_keep_the_asked_page(ui: Console) -> None:
    page = ui.client.get("/inventory?q=web", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Finventory%3Fq%3Dweb"
    form = ui.client.get("/login")
    assert 'name="username"' in form.text and 'name="password"' in form.text
    assert ui.login("operator", next_path="/inventory?q=web").headers["location"] == (
        "/inventory?q=web"
    )
    inventory = ui.client.get("/inventory?q=web")
    assert _names(inventory.text) == ["web1", "web2"]


def test_login_cookie_flags_csp_and_wrong_password(ui: Console) -> None:
    wrong = ui.login("operator", "nope")
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text
    assert SESSION_COOKIE not in ui.client.cookies
    unknown = ui.login("nobody", "nope")
    assert unknown.status_code == 401
    done = ui.login("operator")
    assert done.status_code == 303
    cookie = next(h for h in done.headers.get_list("set-cookie")
                  if h.startswith(SESSION_COOKIE))  # fmt: skip
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http in the test; over TLS it is Secure
    page = ui.client.get("/")
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert "<script>" not in page.text  # no inline script anywhere
    assert page.headers["x-frame-options"] == "DENY"


def test_session_cookie_is_secure_over_tls(sqlite_store: Store) -> None:
    with console(sqlite_store) as ui:
        ui.client.base_url = ui.client.base_url.copy_with(scheme="https")
        done = ui.login("operator")
        cookie = next(h for h in done.headers.get_list("set-cookie")
                      if h.startswith(SESSION_COOKIE))  # fmt: skip
        assert "Secure" in cookie


def test_login_without_its_form_token_is_refused(ui: Console) -> None:
    ui.client.get("/login")
    forged = ui.client.post("/login", data={"username": "admin", "password": "x" * 8,
                                            "csrf_token": "forged"})  # fmt: skip
    assert forged.status_code == 403
    assert SESSION_COOKIE not in ui.client.cookies


def test_a_form_without_the_session_csrf_token_is_refused(ui: Console) -> None:
    ui.login("operator")
    for token in (None, "forged"):
        data = {"to": "kvm2", "strategy": "live", "max_downtime_ms": "300"}
        if token:
            data["csrf_token"] = token
        refused = ui.client.post("/vms/web1/move", data=data)
        assert refused.status_code == 403
        assert "CSRF" in refused.text
    assert ui.move.calls == []
    rows = [e for e in audit_service.entries(ui.store) if e.action == "console.csrf"]
    assert len(rows) == 2 and {r.user for r in rows} == {"operator"}
    assert {r.result for r in rows} == {"refused"}


def test_logout_ends_the_session(ui: Console) -> None:
    ui.login("viewer")
    token = ui.csrf()
    cookie = ui.client.cookies[SESSION_COOKIE]
    assert ui.client.post("/logout", data={"csrf_token": token},
                          follow_redirects=False).status_code == 303  # fmt: skip
    ui.client.cookies.set(SESSION_COOKIE, cookie)  # the old cookie opens nothing now
    assert ui.client.get("/", follow_redirects=False).status_code == 303


def test_operator_moves_from_the_move_button(ui: Console) -> None:
    ui.login("operator")
    page = ui.client.get("/vms/web1")
    assert 'id="move-button"' in page.text
    destinations = r'<select id="move-to" name="to" required>\s*<option>(\w+)</option>\s*</select>'
    assert re.findall(destinations, page.text) == ["kvm2"]
    started = ui.client.post("/vms/web1/move", data={
        "csrf_token": form_token(page.text), "to": "kvm2", "strategy": "postcopy",
        "max_downtime_ms": "500"}, follow_redirects=False)  # fmt: skip
    assert started.status_code == 303
    job_id = started.headers["location"].rsplit("/", 1)[1]
    assert ui.move.calls == [("web1", "kvm2", "postcopy", 500)]
    row = next(e for e in audit_service.entries(ui.store) if e.action == "migrate")
    assert (row.user, row.target, row.result) == ("operator", "web1", "ok")
    assert _finished(ui.store, job_id) is JobStatus.COMPLETED
    job = ui.client.get(f"/jobs/{job_id}")
    assert job.status_code == 200
    assert '"remaining_mib":900.0' in job.text.replace(" ", "")
    assert (
        'data-step="transfer"><span class="step-name">transfer</span> <span class="step-state">done'
        in job.text
    )


def test_move_form_errors_are_shown_by_the_form(ui: Console) -> None:
    ui.login("operator")
    token = ui.csrf("/vms/web1")
    bad = ui.client.post(
        "/vms/web1/move",
        data={"csrf_token": token, "to": "kvm1", "strategy": "live", "max_downtime_ms": "300"},
    )
    assert bad.status_code == 422
    assert 'id="move-error"' in bad.text and "is not a host you can move this VM to" in bad.text
    odd = ui.client.post(
        "/vms/web1/move",
        data={"csrf_token": token, "to": "kvm2", "strategy": "live", "max_downtime_ms": "7"},
    )
    assert odd.status_code == 422 and "maximum downtime" in odd.text
    assert ui.move.calls == []


def test_viewer_sees_no_move_button_and_a_forged_post_is_403(ui: Console) -> None:
    ui.login("viewer")
    page = ui.client.get("/vms/web1")
    assert page.status_code == 200
    assert "move-button" not in page.text and 'id="no-move"' in page.text
    assert "a viewer only reads" in page.text
    forged = ui.client.post("/vms/web1/move", data={
        "csrf_token": form_token(page.text), "to": "kvm2", "strategy": "live",
        "max_downtime_ms": "300"})  # fmt: skip
    assert forged.status_code == 403
    assert "role.viewer.read-only" in forged.text
    assert ui.move.calls == []
    row = next(e for e in audit_service.entries(ui.store) if e.action == "migrate")
    assert (row.user, row.result, row.detail.get("rule")) == (
        "viewer",
        "refused",
        "role.viewer.read-only",
    )


def test_planner_may_check_but_not_move(ui: Console) -> None:
    ui.login("planner")
    page = ui.client.get("/vms/db1")
    assert "move-button" not in page.text
    checked = ui.client.post("/vms/db1/check", data={"csrf_token": form_token(page.text),
                                                     "to": "kvm1"})  # fmt: skip
    assert checked.status_code == 200
    assert "kvm1 has another CPU model" in checked.text and "pin the CPU model" in checked.text
    assert "<dt>Total time</dt><dd>23.4 s</dd>" in checked.text
    assert "kvm1&#39;s link, 800 Mbit/s" in checked.text


def test_self_service_sees_only_its_project(ui: Console) -> None:
    ui.login("selfweb")
    assert _names(ui.client.get("/inventory").text) == ["web1", "web2"]
    assert ui.client.get("/vms/db1").status_code == 404
    page = ui.client.get("/vms/web1")
    strategies = re.search(r'<select id="move-strategy"[^>]*>(.*?)</select>', page.text, re.S)
    assert strategies is not None
    assert re.findall(r"<option>(\w+)</option>", strategies.group(1)) == ["live", "cold"]
    token = form_token(page.text)
    refused = ui.client.post(
        "/vms/db1/move",
        data={"csrf_token": token, "to": "kvm1", "strategy": "live", "max_downtime_ms": "300"},
    )
    assert refused.status_code == 404
    warm = ui.client.post(
        "/vms/web1/move",
        data={"csrf_token": token, "to": "kvm2", "strategy": "warm", "max_downtime_ms": "300"},
    )
    assert warm.status_code == 422 and "Choose a strategy among live, cold" in warm.text
    assert ui.move.calls == []
    fleet = ui.client.get("/")
    assert "2 VMs" in fleet.text and "db1" not in fleet.text


def test_inventory_search_sort_and_pages(ui: Console) -> None:
    ui.login("viewer")
    assert _names(ui.client.get("/inventory?q=debian").text) == ["web1"]
    assert _names(ui.client.get("/inventory?q=project:db").text) == ["db1"]
    assert _names(ui.client.get("/inventory?q=kvm2 running").text) == ["cache1", "db1"]
    assert _names(ui.client.get("/inventory?state=paused").text) == ["db2"]
    assert _names(ui.client.get("/inventory?vcpus_min=4&sort=vcpus&dir=desc").text) == [
        "db1", "db2"]  # fmt: skip
    assert _names(ui.client.get("/inventory?sort=memory").text) == [
        "cache1", "web1", "web2", "db2", "db1"]  # fmt: skip
    bad = ui.client.get("/inventory?state=flying&sort=colour")
    assert bad.status_code == 200
    assert "state &#39;flying&#39; is not one of" in bad.text
    assert "cannot sort by &#39;colour&#39;" in bad.text


def test_inventory_pages_10000_vms(sqlite_store: Store) -> None:
    records = [vm(f"vm{n:05d}", f"kvm{1 + n % 2}", memory_gib=1 + n % 7) for n in range(10_000)]
    with console(sqlite_store, records=records) as ui:
        ui.login("viewer")
        first = ui.client.get("/inventory?per_page=100&sort=memory&dir=desc")
        assert "VMs 1\u2013100 of 10000" in first.text
        names = _names(first.text)
        assert len(names) == 100
        last = ui.client.get("/inventory?per_page=100&sort=memory&dir=desc&page=100")
        assert "VMs 9901\u201310000 of 10000" in last.text
        assert 'rel="next"' not in last.text and 'rel="prev"' in last.text
        beyond = ui.client.get("/inventory?per_page=100&page=999")
        assert "Page 100 of 100" in beyond.text
        found = ui.client.get("/inventory?q=vm09999")
        assert _names(found.text) == ["vm09999"]


def test_fleet_bars_and_unreachable_host(ui: Console) -> None:
    ui.login("viewer")
    page = ui.client.get("/")
    assert "24.0 GiB of 64.0 GiB (38 %)" in page.text  # kvm1: 64 GiB, 40 free
    assert "2 vCPUs of 16 vCPUs" in page.text  # web1 runs on kvm1
    assert "Not reached: kvm2: no route to host" in page.text
    assert 'state-unreachable">unreachable' in page.text


def test_job_events_stream_then_end(sqlite_store: Store) -> None:
    with console(sqlite_store, hold=True) as ui:
        ui.login("operator")
        token = ui.csrf("/vms/web1")
        started = ui.client.post("/vms/web1/move", data={
            "csrf_token": token, "to": "kvm2", "strategy": "live", "max_downtime_ms": "300"},
            follow_redirects=False)  # fmt: skip
        job_id = started.headers["location"].rsplit("/", 1)[1]
        page = ui.client.get(f"/jobs/{job_id}")
        assert 'id="cancel-button"' in page.text
        assert 'data-finished="false"' in page.text
        ui.client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
        with ui.client.stream("GET", f"/jobs/{job_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            body = "".join(stream.iter_text())
        assert "event: job" in body and '"point":{"t":' in body
        assert '"remaining_mib":40.0' in body
        assert body.rstrip().endswith('event: end\ndata: {"status":"cancelled"}')
        resumed = ui.client.get(f"/jobs/{job_id}/events?from=3")
        assert "id: 2\n" not in resumed.text and "id: 3\n" in resumed.text


def test_viewer_cannot_cancel_a_job(sqlite_store: Store) -> None:
    with console(sqlite_store, hold=True) as ui:
        ui.login("operator")
        token = ui.csrf("/vms/web1")
        started = ui.client.post("/vms/web1/move", data={
            "csrf_token": token, "to": "kvm2", "strategy": "live", "max_downtime_ms": "300"},
            follow_redirects=False)  # fmt: skip
        job_id = started.headers["location"].rsplit("/", 1)[1]
        ui.client.cookies.clear()
        ui.login("viewer")
        page = ui.client.get(f"/jobs/{job_id}")
        assert "cancel-button" not in page.text
        refused = ui.client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": ui.csrf()})
        assert refused.status_code == 403
        assert not ui.store.is_cancel_requested(job_id)


def test_unknown_vm_and_job_say_what_to_do(ui: Console) -> None:
    ui.login("viewer")
    missing = ui.client.get("/vms/nope")
    assert missing.status_code == 404 and "Search the inventory" in missing.text
    assert ui.client.get("/jobs/nope").status_code == 404


def test_every_vm_of_the_fleet_is_listed(ui: Console) -> None:
    ui.login("admin")
    assert sorted(_names(ui.client.get("/inventory").text)) == sorted(
        r.spec.name for r in FLEET)  # fmt: skip


def test_self_service_sees_no_other_projects_jobs(sqlite_store: Store) -> None:
    with console(sqlite_store, hold=True) as ui:
        ui.login("operator")
        token = ui.csrf("/vms/db1")
        started = ui.client.post("/vms/db1/move", data={
            "csrf_token": token, "to": "kvm1", "strategy": "live", "max_downtime_ms": "300"},
            follow_redirects=False)  # fmt: skip
        job_id = started.headers["location"].rsplit("/", 1)[1]
        assert f"/jobs/{job_id}" in ui.client.get("/").text  # the operator sees it running
        ui.client.cookies.clear()
        ui.login("selfweb")
        assert job_id not in ui.client.get("/").text
        assert job_id not in ui.client.get("/jobs").text
        assert ui.client.get(f"/jobs/{job_id}").status_code == 404
        assert ui.client.get(f"/jobs/{job_id}/events").status_code == 404


def test_job_page_shows_each_events_record_inline(ui: Console) -> None:
    ui.login("operator")
    job = ui.store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    ui.store.add_event(job.id, "hook", "post-migrate /opt/smoke exited 1",
                       {"output": "smoke: <db> unreachable"})  # fmt: skip
    page = ui.client.get(f"/jobs/{job.id}")
    assert "post-migrate /opt/smoke exited 1<details><summary>its record</summary>" in page.text
    assert "smoke: \\u003cdb\\u003e unreachable" in page.text  # escaped, never markup


def test_a_host_decisions_job_page_names_the_host_not_a_vm(ui: Console) -> None:
    """A host-standby job (consolidation's decision; its subject is the host): the page says
    it is about host kvm2, links the fleet, and shows none of a move's pipeline, transfer
    or "what is left where" (which would look for a VM named kvm2)."""
    ui.login("operator")
    job = ui.store.create_job("host-standby", "kvm2", "kvm2", "kvm2", MigrationOptions())
    ui.store.add_event(job.id, "decision", "kvm2 is empty: into standby", {"host": "kvm2"})
    ui.store.set_status(job.id, JobStatus.RUNNING)
    ui.store.set_status(job.id, JobStatus.FAILED)
    page = ui.client.get(f"/jobs/{job.id}")
    assert page.status_code == 200
    assert 'host-standby of host <a href="/fleet">kvm2</a>' in page.text
    assert "/vms/kvm2" not in page.text and 'id="pipeline"' not in page.text
    assert "What is left where" not in page.text and "kvm2 is empty: into standby" in page.text
    move = ui.store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    moved = ui.client.get(f"/jobs/{move.id}").text  # a move's page keeps all of it
    assert '<a href="/vms/web1">web1</a>' in moved and 'id="pipeline"' in moved


def test_a_page_that_catches_up_on_a_finished_job_sees_each_event_with_its_own_status(
    ui: Console,
) -> None:
    """A job page rendered mid-move, whose stream connects after the move ended: the
    events it lacks are sent with the status the job had then, "completed" only with the
    event that completed it. Sent with the final status, the page showed "completed" beside
    the chart's second sample, before the third arrived (seen once in the browser test)."""
    ui.login("viewer")
    job = ui.store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    ui.store.set_status(job.id, JobStatus.RUNNING)
    seen = len(ui.store.get_job(job.id).events)  # what the page was rendered with
    for index, left in enumerate((900, 300, 40), start=1):
        data = {"iteration": index, "memory_remaining_bytes": left * 2**20}
        ui.store.add_event(job.id, "progress", f"pass {index}: {left} MiB left", data)
    ui.store.set_status(job.id, JobStatus.COMPLETED)
    body = ui.client.get(f"/jobs/{job.id}/events?from={seen}").text
    sent = [json.loads(line[len("data: "):]) for line in body.splitlines()
            if line.startswith("data: ") and '"index"' in line]  # fmt: skip
    assert [(m["kind"], m["status"], m["point"] is not None) for m in sent] == [
        ("progress", "running", True), ("progress", "running", True),
        ("progress", "running", True), ("status", "completed", False)]  # fmt: skip


def test_the_page_of_a_vm_libvirt_holds_for_a_migration_says_its_devices_were_not_read(
    ui: Console,
) -> None:
    """A post-copy running or broken off: the driver read no devices (``devices_read``
    False); the page says why rather than "none"."""
    from dataclasses import replace

    web1 = next(r for r in FLEET if r.spec.name == "web1")
    bare = replace(web1.spec, disks=(), nics=())
    ui.inventory.records = [replace(web1, spec=bare, devices_read=False)]
    ui.login("operator")
    page = ui.client.get("/vms/web1")
    assert page.status_code == 200, page.text
    assert 'id="devices-unread"' in page.text and "<dt>Disks</dt>" not in page.text
    ui.inventory.records = [web1]
    assert "<dt>Disks</dt>" in ui.client.get("/vms/web1").text
