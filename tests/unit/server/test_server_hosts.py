"""POST /hosts and DELETE /hosts/{name} on SQLite and PostgreSQL: a host is registered only
once its libvirt answers (libvirt's test driver here), a shell only by an admin, and bad
input writes nothing."""

from __future__ import annotations

from conftest import Api
from test_server_api import trail


def test_a_host_is_added_and_removed(api: Api) -> None:
    done = api.client.post(
        "/api/v1/hosts",
        headers=api.as_("operator"),
        json={"name": "t1", "uri": "test:///default", "link_mbps": 1000},
    )
    assert done.status_code == 201, done.text
    assert done.headers["location"] == "/api/v1/hosts/t1"
    assert done.json()["link_mbps"] == 1000
    assert api.store.get_host("t1").uri == "test:///default"
    again = api.client.post(
        "/api/v1/hosts", headers=api.as_("operator"), json={"name": "t1", "uri": "test:///default"}
    )
    assert again.status_code == 409
    gone = api.client.delete("/api/v1/hosts/t1", headers=api.as_("operator"))
    assert gone.status_code == 204
    assert "t1" not in [h.name for h in api.store.list_hosts()]
    assert api.client.delete("/api/v1/hosts/t1", headers=api.as_("operator")).status_code == 404
    assert trail(api) == [
        ("operator", "hosts.write", "t1", "ok"),
        ("operator", "hosts.write", "t1", "rejected"),
        ("operator", "hosts.write", "t1", "ok"),
        ("operator", "hosts.write", "t1", "rejected"),
    ]


def test_a_host_that_does_not_answer_or_bad_input_is_not_stored(api: Api) -> None:
    before = [h.name for h in api.store.list_hosts()]
    dead = api.client.post(
        "/api/v1/hosts",
        headers=api.as_("admin"),
        json={"name": "dead", "uri": "qemu+tcp://unreachable/system"},
    )
    assert dead.status_code == 502, dead.text
    spaced = api.client.post(
        "/api/v1/hosts", headers=api.as_("admin"), json={"name": "a b", "uri": "test:///default"}
    )
    assert spaced.status_code == 422
    extra = api.client.post(
        "/api/v1/hosts",
        headers=api.as_("admin"),
        json={"name": "x", "uri": "test:///default", "color": "red"},
    )
    assert extra.status_code == 422
    assert [h.name for h in api.store.list_hosts()] == before


def test_only_an_admin_gives_a_host_a_shell(api: Api) -> None:
    body = {"name": "t2", "uri": "test:///default", "shell": "local"}
    refused = api.client.post("/api/v1/hosts", headers=api.as_("operator"), json=body)
    assert refused.status_code == 403 and refused.json()["rule"] == "hosts.shell"
    assert "t2" not in [h.name for h in api.store.list_hosts()]
    done = api.client.post("/api/v1/hosts", headers=api.as_("admin"), json=body)
    assert done.status_code == 201, done.text
    assert done.json()["shell"] == "local"
