"""Named port profiles through the API (as `vmferry netprofile list|show|define|remove`),
on SQLite and PostgreSQL; the profiles live in $VMFERRY_NETPROFILES (a directory per
test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Api
from test_server_api import trail

from vmferry.netprofile.spec import make_profile, profile_to_json
from vmferry.service import netprofile as service

WEB = {"network": "default", "in_kib_s": 1000, "burst_kib": 64, "allow": ["tcp:80,443"],
       "level": "dmz"}  # fmt: skip


@pytest.fixture(autouse=True)
def profiles_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "netprofiles"
    monkeypatch.setenv("VMFERRY_NETPROFILES", str(folder))
    return folder


def test_define_show_list_replace_and_delete(api: Api, profiles_dir: Path) -> None:
    made = api.client.put("/api/v1/netprofiles/web", headers=api.as_("operator"), json=WEB)
    assert made.status_code == 201, made.text
    expected = profile_to_json(make_profile("web", "default", inbound_kib_s=1000, burst_kib=64,
                                            acl=["tcp:80,443"], security_level="dmz"))  # fmt: skip
    assert made.json() == expected
    assert (profiles_dir / "web.json").is_file()
    assert service.get_profile("web").inbound is not None
    shown = api.client.get("/api/v1/netprofiles/web", headers=api.as_("selfweb"))
    assert shown.json() == expected
    replaced = api.client.put("/api/v1/netprofiles/web", headers=api.as_("admin"),
                              json={"network": "lan"})  # fmt: skip
    assert (replaced.status_code, replaced.json()["network"], replaced.json()["acl"]) == (
        200, "lan", None)  # fmt: skip
    listed = api.client.get("/api/v1/netprofiles", headers=api.as_("viewer")).json()
    assert [p["name"] for p in listed] == ["web"]
    gone = api.client.delete("/api/v1/netprofiles/web", headers=api.as_("operator"))
    assert gone.json() == {"removed": ["named profile web"]}
    assert api.client.get("/api/v1/netprofiles/web", headers=api.as_("viewer")).status_code == 404
    assert api.client.delete("/api/v1/netprofiles/web",
                             headers=api.as_("operator")).status_code == 404  # fmt: skip
    assert [(a, t, r) for _, a, t, r in trail(api)] == [
        ("netprofiles.write", "web", "ok"), ("netprofiles.write", "web", "ok"),
        ("netprofiles.write", "web", "ok"), ("netprofiles.write", "web", "rejected")]  # fmt: skip


def test_bad_profiles_are_422_with_the_field_and_write_nothing(
    api: Api, profiles_dir: Path
) -> None:
    bad_rule = api.client.put("/api/v1/netprofiles/web", headers=api.as_("operator"),
                              json={**WEB, "allow": ["tcp:99999"]})  # fmt: skip
    assert bad_rule.status_code == 422
    assert bad_rule.json()["detail"][0]["path"] == "body.allow"
    bad_rate = api.client.put("/api/v1/netprofiles/web", headers=api.as_("operator"),
                              json={**WEB, "in_kib_s": 0})  # fmt: skip
    assert [p["path"] for p in bad_rate.json()["detail"]] == ["body.in_kib_s"]
    bad_name = api.client.put("/api/v1/netprofiles/Web_1", headers=api.as_("operator"), json=WEB)
    assert bad_name.status_code == 422 and bad_name.json()["detail"][0]["path"] == "path.name"
    assert not profiles_dir.exists() or list(profiles_dir.iterdir()) == []


def test_netprofile_roles(api: Api, profiles_dir: Path) -> None:
    for who, rule in (("planner", "role.planner"), ("viewer", "role.viewer.read-only"),
                      ("selfweb", "self-service.fleet-wide")):  # fmt: skip
        done = api.client.put("/api/v1/netprofiles/web", headers=api.as_(who), json=WEB)
        assert (done.status_code, done.json()["rule"]) == (403, rule)
        gone = api.client.delete("/api/v1/netprofiles/web", headers=api.as_(who))
        assert (gone.status_code, gone.json()["rule"]) == (403, rule)
    assert not profiles_dir.exists()


def test_a_profile_put_on_a_host_taken_off_and_captured(api: Api, profiles_dir: Path) -> None:
    service.save_profile(make_profile("web", "default", inbound_kib_s=1000))
    put = api.client.put("/api/v1/hosts/kvm1/netprofiles/web", headers=api.as_("operator"))
    assert put.status_code == 200, put.text
    assert (put.json()["host"], put.json()["portgroup"], put.json()["rules"]) == (
        "kvm1", "added", "none")  # fmt: skip
    api.actions.in_use["web"] = "web1"
    busy = api.client.delete("/api/v1/hosts/kvm1/netprofiles/web", headers=api.as_("operator"))
    assert busy.status_code == 409 and busy.json()["detail"].endswith("by web1")
    api.actions.in_use.clear()
    off = api.client.delete("/api/v1/hosts/kvm1/netprofiles/web", headers=api.as_("admin"))
    assert off.json() == {"removed": ["portgroup web of default"]}
    assert service.get_profile("web").inbound is not None  # the named profile stays
    captured = api.client.post("/api/v1/vms/web1/netprofiles/capture",
                               headers=api.as_("operator"))  # fmt: skip
    assert captured.status_code == 200, captured.text
    doc = captured.json()
    assert (doc["vm"], doc["host"], doc["ports"][0]["segment"]["network"]) == (
        "web1", "kvm1", "default")  # fmt: skip
    assert [p["name"] for p in doc["profiles"]] == ["captured"]
    assert (profiles_dir / "captured.json").is_file()
    assert [(a, t, r) for _, a, t, r in trail(api)] == [
        ("netprofiles.write", "web", "ok"), ("netprofiles.write", "web", "rejected"),
        ("netprofiles.write", "web", "ok"), ("netprofiles.write", "web1", "ok")]  # fmt: skip


def test_unknown_profiles_hosts_and_vms_and_a_host_that_does_not_answer(
    api: Api, profiles_dir: Path
) -> None:
    service.save_profile(make_profile("web", "default"))
    who = api.as_("operator")
    assert api.client.put("/api/v1/hosts/kvm1/netprofiles/nope", headers=who).status_code == 404
    assert api.client.put("/api/v1/hosts/kvm9/netprofiles/web", headers=who).status_code == 404
    assert api.client.put("/api/v1/hosts/kvm3/netprofiles/web", headers=who).status_code == 502
    bad = api.client.delete("/api/v1/hosts/kvm1/netprofiles/Bad_1", headers=who)
    assert bad.status_code == 422 and bad.json()["detail"][0]["path"] == "path.name"
    ghost = api.client.post("/api/v1/vms/ghost/netprofiles/capture", headers=who)
    assert ghost.status_code == 404
    assert sorted(p.name for p in profiles_dir.iterdir()) == ["web.json"]
