"""POST /api/v1/profiles (202 once the first sample is stored; the sampling goes on in a
thread of the server) and GET /api/v1/vms/{id}/profile (the stored samples summarised), on
SQLite and PostgreSQL, with the profiler faked (it stores samples as the real one does)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Api, serving
from test_server_api import trail

from vmferry.server.routers import profiles as profiles_router
from vmferry.store.db import Store


@pytest.fixture
def held(store: Store) -> Iterator[Api]:
    with serving(store) as api:
        api.actions.hold = True
        yield api


def test_profiling_starts_in_the_server_and_its_profile_grows(held: Api) -> None:
    body = {"vm": "web1", "duration_s": 3, "interval_s": 1}
    done = held.client.post("/api/v1/profiles", headers=held.as_("operator"), json=body)
    assert done.status_code == 202, done.text
    assert done.headers["location"] == "/api/v1/vms/web1/profile"
    started = done.json()
    assert (started["vm"], started["host"], started["duration_s"]) == ("web1", "kvm1", 3)
    again = held.client.post("/api/v1/profiles", headers=held.as_("operator"), json=body)
    assert again.status_code == 409  # one run per VM in this server
    first = held.client.get(done.headers["location"], headers=held.as_("viewer"))
    assert first.status_code == 200
    assert (first.json()["samples"], first.json()["sampling"]) == (1, True)
    held.actions.release.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        doc = held.client.get(done.headers["location"], headers=held.as_("viewer")).json()
        if not doc["sampling"]:
            break
        time.sleep(0.02)
    assert (doc["samples"], doc["sampling"]) == (3, False)
    assert doc["stats"]["cpu_share"]["max"] == pytest.approx(0.3)
    assert doc["rightsizing"]["vcpus"] == 2 and doc["rightsizing"]["reason"]
    assert trail(held) == [("operator", "profile", "web1", "ok"),
                           ("operator", "profile", "web1", "rejected")]  # fmt: skip


def test_a_run_ending_while_its_profile_is_read_is_still_sampling_in_that_answer(
    held: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run ends (its last sample stored, then no longer active) between the summary's
    read and the answer: the answer must not say "not sampling" beside a summary short of
    the last samples (`vmferry profile` through the server stops following at that word;
    its text output once showed 3 samples of 4)."""
    body = {"vm": "web1", "duration_s": 3, "interval_s": 1}
    done = held.client.post("/api/v1/profiles", headers=held.as_("operator"), json=body)
    assert done.status_code == 202, done.text
    real = profiles_router.stored_summary

    def read_then_let_the_run_end(*args: Any, **kwargs: Any) -> Any:
        summary = real(*args, **kwargs)
        held.actions.release.set()
        deadline = time.monotonic() + 10
        while any(t.name == "vmferry-profile-web1" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the profile run did not end"
            time.sleep(0.01)
        return summary

    monkeypatch.setattr(profiles_router, "stored_summary", read_then_let_the_run_end)
    raced = held.client.get(done.headers["location"], headers=held.as_("viewer")).json()
    assert (raced["samples"], raced["sampling"]) == (1, True)
    monkeypatch.undo()
    after = held.client.get(done.headers["location"], headers=held.as_("viewer")).json()
    assert (after["samples"], after["sampling"]) == (3, False)


def test_a_vm_that_cannot_be_profiled_samples_nothing(api: Api) -> None:
    paused = api.client.post("/api/v1/profiles", headers=api.as_("operator"),
                             json={"vm": "db2", "duration_s": 1, "interval_s": 1})  # fmt: skip
    assert paused.status_code == 422 and "running" in paused.json()["detail"][0]["msg"]
    ghost = api.client.post("/api/v1/profiles", headers=api.as_("operator"), json={"vm": "ghost"})
    assert ghost.status_code == 404
    fast = api.client.post("/api/v1/profiles", headers=api.as_("operator"),
                           json={"vm": "web1", "interval_s": 0.01})  # fmt: skip
    assert fast.status_code == 422 and fast.json()["detail"][0]["path"] == "body.interval_s"
    assert api.store.profile_samples("db2") == [] and api.store.profile_samples("web1") == []
    none = api.client.get("/api/v1/vms/web1/profile", headers=api.as_("viewer"))
    assert none.status_code == 404 and "POST /api/v1/profiles" in none.json()["detail"]


def test_profile_roles_and_a_self_service_user_on_another_projects_vm(api: Api) -> None:
    body = {"vm": "web1", "duration_s": 1, "interval_s": 1}
    theirs = api.client.post("/api/v1/profiles", headers=api.as_("selfdb"), json=body)
    assert (theirs.status_code, theirs.json()["rule"]) == (403, "self-service.project")
    viewer = api.client.post("/api/v1/profiles", headers=api.as_("viewer"), json=body)
    assert (viewer.status_code, viewer.json()["rule"]) == (403, "role.viewer.read-only")
    assert api.store.profile_samples("web1") == []
    mine = api.client.post("/api/v1/profiles", headers=api.as_("selfweb"), json=body)
    assert mine.status_code == 202
    since = api.client.get("/api/v1/vms/web1/profile?since=2999-01-01T00:00:00Z",
                           headers=api.as_("selfdb"))  # fmt: skip
    assert since.status_code == 404  # a read of the VM: any role; nothing that new
    assert api.client.get("/api/v1/vms/web1/profile?since=yesterday",
                          headers=api.as_("viewer")).status_code == 422  # fmt: skip


def test_a_hosts_running_vms_are_profiled_together(held: Api) -> None:
    body = {"duration_s": 2, "interval_s": 1}
    done = held.client.post("/api/v1/hosts/kvm2/profiles", headers=held.as_("planner"),
                            json=body)  # fmt: skip
    assert done.status_code == 202, done.text
    started = done.json()
    assert (started["host"], started["vms"]) == ("kvm2", ["cache1", "db1"])  # db2 is paused
    assert started["profile_urls"] == ["/api/v1/vms/cache1/profile", "/api/v1/vms/db1/profile"]
    one = held.client.post("/api/v1/profiles", headers=held.as_("operator"),
                           json={"vm": "db1", "duration_s": 1, "interval_s": 1})  # fmt: skip
    assert one.status_code == 409 and "db1" in one.json()["detail"]
    again = held.client.post("/api/v1/hosts/kvm2/profiles", headers=held.as_("operator"),
                             json=body)  # fmt: skip
    assert again.status_code == 409
    held.actions.release.set()
    deadline = time.monotonic() + 10
    docs = {}
    while time.monotonic() < deadline:
        docs = {url: held.client.get(url, headers=held.as_("viewer")).json()
                for url in started["profile_urls"]}  # fmt: skip
        if not any(d["sampling"] for d in docs.values()):
            break
        time.sleep(0.02)
    assert [(d["vm"], d["samples"], d["sampling"]) for d in docs.values()] == [
        ("cache1", 2, False), ("db1", 2, False)]  # fmt: skip
    later = held.client.post("/api/v1/profiles", headers=held.as_("operator"),
                             json={"vm": "db1", "duration_s": 1, "interval_s": 1})  # fmt: skip
    assert later.status_code == 202  # the host's run released its VMs


def test_a_host_that_cannot_be_profiled_samples_nothing(api: Api) -> None:
    body = {"duration_s": 1, "interval_s": 1}
    gone = api.client.post("/api/v1/hosts/kvm9/profiles", headers=api.as_("operator"), json=body)
    assert gone.status_code == 404 and "kvm9" in gone.json()["detail"]
    down = api.client.post("/api/v1/hosts/kvm3/profiles", headers=api.as_("operator"), json=body)
    assert down.status_code == 502
    extra = api.client.post("/api/v1/hosts/kvm1/profiles", headers=api.as_("operator"),
                            json={**body, "vm": "web1"})  # fmt: skip
    assert extra.status_code == 422 and extra.json()["detail"][0]["path"] == "body.vm"
    mine = api.client.post("/api/v1/hosts/kvm1/profiles", headers=api.as_("selfweb"), json=body)
    assert (mine.status_code, mine.json()["rule"]) == (403, "self-service.project")
    assert api.store.profile_samples("web1") == []
