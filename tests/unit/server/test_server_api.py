"""The API's endpoints on SQLite and on a real PostgreSQL (each test runs on both): what
they answer, what they write, and what they write nothing for."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Api

from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import JobStatus
from vmferry.service import audit as audit_service
from vmferry.store import accounts


def trail(api: Api) -> list[tuple[str | None, str, str | None, str]]:
    """The requests' rows (the jobs' transitions, rows too, are tested in test_jobs_store)."""
    return [(e.user, e.action, e.target, e.result) for e in audit_service.entries(api.store)
            if not e.action.startswith("job.")]  # fmt: skip


def test_the_schema_and_the_docs_are_served(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert {"/api/v1/hosts", "/api/v1/vms", "/api/v1/vms/{vm_id}/tags", "/api/v1/jobs",
            "/api/v1/jobs/{job_id}/events", "/api/v1/audit"} <= set(schema["paths"])  # fmt: skip
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_hosts(api: Api) -> None:
    listed = api.client.get("/api/v1/hosts", headers=api.as_("viewer"))
    assert listed.status_code == 200
    assert [h["name"] for h in listed.json()] == ["kvm1", "kvm2", "kvm3"]
    one = api.client.get("/api/v1/hosts/kvm2", headers=api.as_("viewer")).json()
    assert one == {"name": "kvm2", "uri": "qemu+tls://kvm2/system", "migration_uri": None,
                   "shell": None, "link_mbps": None, "migration_tls": False}  # fmt: skip
    missing = api.client.get("/api/v1/hosts/ghost", headers=api.as_("viewer"))
    assert missing.status_code == 404
    assert "no host named 'ghost'" in missing.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic YWxpY2U6cHc="},
     {"Authorization": "Bearer vmf_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}],
)  # fmt: skip
def test_no_valid_token_is_401(api: Api, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/api/v1/hosts"), ("GET", "/api/v1/vms"),
                         ("PUT", "/api/v1/vms/web1/tags"), ("GET", "/api/v1/audit")):  # fmt: skip
        body = {"tags": ["x"]} if method == "PUT" else None
        done = api.client.request(method, path, headers=headers, json=body)
        assert done.status_code == 401, (path, done.text)
        assert done.headers["www-authenticate"] == "Bearer"
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:1")
    assert trail(api) == []


def test_a_removed_or_replaced_token_is_401_at_once(api: Api) -> None:
    from vmferry.service import users

    assert api.client.get("/api/v1/hosts", headers=api.as_("viewer")).status_code == 200
    users.new_token(api.store, "viewer")
    assert api.client.get("/api/v1/hosts", headers=api.as_("viewer")).status_code == 401
    assert api.client.get("/api/v1/hosts", headers=api.as_("planner")).status_code == 200
    users.remove_user(api.store, "planner")
    assert api.client.get("/api/v1/hosts", headers=api.as_("planner")).status_code == 401


def names(page: dict[str, Any]) -> list[str]:
    return [item["name"] for item in page["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["cache1", "db1", "db2", "web1", "web2"]),
        ("?host=kvm1", ["web1", "web2"]),
        ("?state=running", ["cache1", "db1", "web1"]),
        ("?name=db*", ["db1", "db2"]),
        ("?tag=tier:1", ["db1", "web1"]),
        ("?tag=tier:1&tag=project:web", ["web1"]),
        ("?cpu_model=Skylake-Server", ["db1", "web1"]),
        ("?memory_min_mib=4096", ["db1", "db2", "web2"]),
        ("?memory_min_mib=1024&memory_max_mib=4096", ["web1", "web2"]),
        ("?host=kvm2&state=running&memory_max_mib=1024", ["cache1"]),
    ],
)
def test_the_inventory_filters(api: Api, query: str, expected: list[str]) -> None:
    done = api.client.get(f"/api/v1/vms{query}", headers=api.as_("viewer"))
    assert done.status_code == 200, done.text
    assert names(done.json()) == expected
    assert done.json()["total"] == len(expected)


def test_the_inventory_pages_and_says_which_hosts_did_not_answer(api: Api) -> None:
    first = api.client.get("/api/v1/vms?limit=2", headers=api.as_("viewer")).json()
    assert (names(first), first["total"], first["next_offset"]) == (["cache1", "db1"], 5, 2)
    assert first["unreachable"] == {"kvm3": "kvm3: no route to host"}
    last = api.client.get("/api/v1/vms?limit=2&offset=4", headers=api.as_("viewer")).json()
    assert (names(last), last["next_offset"]) == (["web2"], None)
    web1 = next(i for i in first["items"] if i["name"] == "db1")
    assert web1["tags"] == ["project:db", "tier:1"] and web1["memory_bytes"] == 16 * 2**30


@pytest.mark.parametrize(
    ("query", "path"),
    [("?state=flying", "query.state"), ("?limit=0", "query.limit"),
     ("?memory_min_mib=lots", "query.memory_min_mib"), ("?offset=-1", "query.offset")],
)  # fmt: skip
def test_bad_inventory_parameters_are_422_with_the_parameters_path(
    api: Api, query: str, path: str
) -> None:
    done = api.client.get(f"/api/v1/vms{query}", headers=api.as_("viewer"))
    assert done.status_code == 422
    assert [e["path"] for e in done.json()["detail"]] == [path]


def test_a_vm_by_name_or_uuid_and_404(api: Api) -> None:
    by_name = api.client.get("/api/v1/vms/web1", headers=api.as_("viewer")).json()
    by_uuid = api.client.get("/api/v1/vms/uuid-web1", headers=api.as_("viewer")).json()
    assert by_name == by_uuid
    assert (by_name["host"], by_name["state"], by_name["tags"]) == (
        "kvm1", "running", ["project:web", "tier:1"],
    )  # fmt: skip
    assert by_name["spec"]["name"] == "web1"
    missing = api.client.get("/api/v1/vms/ghost", headers=api.as_("viewer"))
    assert missing.status_code == 404 and "kvm3" in missing.json()["detail"]


def test_tags_are_replaced_and_the_change_is_audited(api: Api) -> None:
    done = api.client.put("/api/v1/vms/uuid-db2/tags", headers=api.as_("operator"),
                          json={"tags": ["project:db", "tier:2"]})  # fmt: skip
    assert done.status_code == 200, done.text
    assert done.json() == {"vm": "db2", "tags": ["project:db", "tier:2"]}
    assert accounts.tags_of(api.store, "db2") == ("project:db", "tier:2")
    entry = audit_service.entries(api.store)[-1]
    assert (entry.user, entry.action, entry.target, entry.result) == (
        "operator", "vms.tag", "db2", "ok",
    )  # fmt: skip
    assert entry.remote == "testclient" and entry.detail["status"] == 200


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"tags": ["ok", "bad tag!"]}, ["body.tags.1"]),
        ({"tags": "project:web"}, ["body.tags"]),
        ({}, ["body.tags"]),
        ({"tags": [], "owner": "me"}, ["body.owner"]),
        ({"tags": [f"t{i}" for i in range(65)]}, ["body.tags"]),
    ],
)
def test_a_malformed_body_is_422_with_the_field_path_and_writes_nothing(
    api: Api, body: dict[str, Any], paths: list[str]
) -> None:
    done = api.client.put("/api/v1/vms/web1/tags", headers=api.as_("operator"), json=body)
    assert done.status_code == 422, done.text
    assert [e["path"] for e in done.json()["detail"]] == paths
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:1")
    assert trail(api) == [("operator", "vms.tag", "web1", "rejected")]


def test_not_json_at_all_is_422(api: Api) -> None:
    done = api.client.put("/api/v1/vms/web1/tags", headers={**api.as_("operator"),
                          "Content-Type": "application/json"}, content=b"{not json")  # fmt: skip
    assert done.status_code == 422
    assert done.json()["detail"][0]["path"].startswith("body")
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:1")


def test_tagging_an_unknown_vm_is_404_and_writes_nothing(api: Api) -> None:
    done = api.client.put("/api/v1/vms/ghost/tags", headers=api.as_("operator"),
                          json={"tags": ["a"]})  # fmt: skip
    assert done.status_code == 404
    assert accounts.tags_of(api.store, "ghost") == ()
    assert trail(api) == [("operator", "vms.tag", "ghost", "rejected")]


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_limit_is_413_and_writes_nothing(api: Api, declared: bool) -> None:
    body = json.dumps({"tags": ["a" * 100] * 60}).encode()  # over the test app's 4096 bytes
    headers = {**api.as_("operator"), "Content-Type": "application/json"}

    def chunks() -> Any:  # streamed, no Content-Length
        yield body[:2000]
        yield body[2000:]

    content = body if declared else chunks()
    done = api.client.put("/api/v1/vms/web1/tags", headers=headers, content=content)
    assert done.status_code == 413
    assert "Traceback" not in done.text
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:1")
    assert trail(api) == []


def test_an_unexpected_error_is_a_one_line_500_without_a_traceback(api: Api) -> None:
    def broken(*_args: object) -> Any:
        raise RuntimeError("secret internals at /srv/vmferry/x.py line 3")

    api.client.app.state.vmferry = type(api.client.app.state.vmferry)(  # type: ignore[attr-defined]
        api.store, broken, 0.01, True
    )
    done = api.client.get("/api/v1/vms", headers=api.as_("viewer"))
    assert done.status_code == 500
    assert done.json() == {"detail": "internal error (RuntimeError); the server's log has the "
                           "details"}  # fmt: skip
    assert "secret" not in done.text and "Traceback" not in done.text
    put = api.client.put("/api/v1/vms/web1/tags", headers=api.as_("admin"), json={"tags": []})
    assert put.status_code == 500
    assert trail(api) == [("admin", "vms.tag", "web1", "error")]
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:1")


# -- jobs -------------------------------------------------------------------------------------


def test_jobs_read_as_the_store_gives_them(api: Api) -> None:
    first, second = api.job("web1"), api.job("db1", JobStatus.FAILED)
    listed = api.client.get("/api/v1/jobs", headers=api.as_("viewer")).json()
    assert [j["id"] for j in listed] == [second, first]
    assert all(j["events"] == [] for j in listed)
    one = api.client.get(f"/api/v1/jobs/{second}", headers=api.as_("viewer")).json()
    assert one == to_jsonable(api.store.get_job(second))
    assert [e["kind"] for e in one["events"]] == ["created", "status", "status"]
    assert api.client.get("/api/v1/jobs/ffffffffffff", headers=api.as_("viewer")).status_code == 404


def test_cancel_asks_the_owner_and_is_audited(api: Api) -> None:
    job_id = api.job("web1", JobStatus.RUNNING)
    done = api.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=api.as_("operator"))
    assert done.status_code == 202
    assert done.json()["cancel_requested"] is True
    assert api.store.is_cancel_requested(job_id)
    finished = api.job("web2", JobStatus.COMPLETED)
    again = api.client.post(f"/api/v1/jobs/{finished}/cancel", headers=api.as_("operator"))
    assert again.status_code == 200 and again.json()["status"] == "completed"
    missing = api.client.post("/api/v1/jobs/ffffffffffff/cancel", headers=api.as_("operator"))
    assert missing.status_code == 404
    assert trail(api) == [
        ("operator", "jobs.cancel", job_id, "ok"), ("operator", "jobs.cancel", finished, "ok"),
        ("operator", "jobs.cancel", "ffffffffffff", "rejected"),
    ]  # fmt: skip


def sse(text: str) -> list[dict[str, Any]]:
    """The events of a text/event-stream body: {"event", "id", "data"} each."""
    found = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = json.loads(value) if key == "data" else value
        if fields:
            found.append(fields)
    return found


def test_the_events_of_a_finished_job_then_end(api: Api) -> None:
    job_id = api.job("db1", JobStatus.FAILED)
    done = api.client.get(f"/api/v1/jobs/{job_id}/events", headers=api.as_("viewer"))
    assert done.status_code == 200
    assert done.headers["content-type"].startswith("text/event-stream")
    events = sse(done.text)
    stored = to_jsonable(api.store.get_job(job_id))
    assert [e["data"] for e in events[:-1]] == stored["events"]
    assert [e["id"] for e in events[:-1]] == ["0", "1", "2"]
    assert [e["event"] for e in events] == ["created", "status", "status", "end"]
    assert events[-1]["data"]["status"] == "failed" and "events" not in events[-1]["data"]
    resumed = api.client.get(f"/api/v1/jobs/{job_id}/events",
                             headers={**api.as_("viewer"), "Last-Event-ID": "1"})  # fmt: skip
    assert [e.get("id") for e in sse(resumed.text)] == ["2", None]


def test_the_stream_follows_a_running_job_until_it_ends(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = api.job("web1", JobStatus.RUNNING)
    real_job_after = api.store.job_after
    reads = []

    def job_after(wanted: str, known: int) -> Any:
        reads.append(known)
        if len(reads) == 2:  # the stream's second look: the job moves on meanwhile
            api.store.add_event(job_id, "progress", "iteration 2")
            api.store.set_status(job_id, JobStatus.COMPLETED)
        return real_job_after(wanted, known)

    monkeypatch.setattr(api.store, "job_after", job_after)
    done = api.client.get(f"/api/v1/jobs/{job_id}/events", headers=api.as_("viewer"))
    events = sse(done.text)
    assert [e["event"] for e in events] == ["created", "status", "progress", "status", "end"]
    assert events[-1]["data"]["status"] == "completed"
    assert events[2]["data"]["message"] == "iteration 2"
    assert reads == [2, 2]  # each look reads only what came after the events already sent


def test_the_events_of_an_unknown_job_are_404(api: Api) -> None:
    done = api.client.get("/api/v1/jobs/ffffffffffff/events", headers=api.as_("viewer"))
    assert done.status_code == 404


# -- audit and users --------------------------------------------------------------------------


def test_the_audit_trail_as_json_and_json_lines_with_filters(api: Api) -> None:
    api.client.put("/api/v1/vms/web2/tags", headers=api.as_("operator"), json={"tags": ["a"]})
    api.client.put("/api/v1/vms/web2/tags", headers=api.as_("viewer"), json={"tags": ["b"]})
    listed = api.client.get("/api/v1/audit", headers=api.as_("viewer")).json()
    assert [{k: e[k] for k in ("user", "action", "target", "result")} for e in listed] == [
        {"user": "operator", "action": "vms.tag", "target": "web2", "result": "ok"},
        {"user": "viewer", "action": "vms.tag", "target": "web2", "result": "refused"},
    ]
    assert {"at", "user", "action", "target", "result"} <= set(listed[0])
    assert listed[1]["detail"]["rule"] == "role.viewer.read-only"
    lines = api.client.get("/api/v1/audit?format=jsonl&user=viewer", headers=api.as_("admin"))
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["user"] for line in lines.text.splitlines()] == ["viewer"]
    later = api.client.get("/api/v1/audit?since=2999-01-01T00:00:00Z", headers=api.as_("admin"))
    assert later.json() == []
    bad = api.client.get("/api/v1/audit?since=yesterday", headers=api.as_("admin"))
    assert bad.status_code == 422
    assert {e["path"].split(".")[:2] == ["query", "since"] for e in bad.json()["detail"]} == {True}
    recent = api.client.get("/api/v1/audit?since=1h", headers=api.as_("admin")).json()
    assert len(recent) == 2


def test_the_user_list_is_an_admins_and_shows_no_token(api: Api) -> None:
    done = api.client.get("/api/v1/users", headers=api.as_("admin"))
    assert done.status_code == 200
    listed = done.json()
    assert [(u["name"], u["role"], u["project"]) for u in listed][:2] == [
        ("admin", "admin", None), ("operator", "operator", None),
    ]  # fmt: skip
    assert not any(token in done.text for token in api.tokens.values())
    refused = api.client.get("/api/v1/users", headers=api.as_("operator"))
    assert refused.status_code == 403 and refused.json()["rule"] == "admin-only"


def test_a_role_refusal_comes_before_the_body_is_judged(api: Api) -> None:
    done = api.client.put("/api/v1/vms/web1/tags", headers=api.as_("viewer"),
                          json={"tags": "not a list"})  # fmt: skip
    assert done.status_code == 403 and done.json()["rule"] == "role.viewer.read-only"
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:1")
    assert trail(api) == [("viewer", "vms.tag", "web1", "refused")]


def test_a_body_that_is_not_text_is_422_at_body(api: Api) -> None:
    headers = {**api.as_("operator"), "Content-Type": "application/json"}
    done = api.client.put("/api/v1/vms/web1/tags", headers=headers, content=b"\xff\xfe\x00x")
    assert done.status_code == 422
    assert [e["path"].split(".")[0] for e in done.json()["detail"]] == ["body"]
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:1")
