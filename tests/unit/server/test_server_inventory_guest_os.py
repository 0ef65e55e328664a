"""The inventory's guest-OS filter: pure (``server/inventory.py``), through ``GET /vms`` on
SQLite and PostgreSQL, and the JSON shape of a VM's guest OS (``VmSpec.guest_os``, the
libosinfo id, null when the domain has none)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import FLEET, Api

from vmferry.model import VmRecord, VmSpec, VmState
from vmferry.model.jsonable import to_jsonable
from vmferry.server.inventory import VmQuery, select_vms
from vmferry.store.codec import from_jsonable

DEBIAN12 = "http://debian.org/debian/12"
WIN2K19 = "http://microsoft.com/win/2k19"
RHEL9 = "http://redhat.com/rhel/9-unknown"


def with_os(record: VmRecord, guest_os: str | None) -> VmRecord:
    return replace(record, spec=replace(record.spec, guest_os=guest_os))


# web1, web2: Debian 12; db1: Windows Server 2019; db2: RHEL 9; cache1: unknown
GUESTS = {"web1": DEBIAN12, "web2": DEBIAN12, "db1": WIN2K19, "db2": RHEL9, "cache1": None}
RECORDS = [with_os(r, GUESTS[r.spec.name]) for r in FLEET]


def names(query: VmQuery, tags: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    page, _total = select_vms(RECORDS, tags or {}, query)
    return [r.spec.name for r in page]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("debian", ["web1", "web2"]),
        ("DEBIAN.ORG/debian/12", ["web1", "web2"]),  # any case
        ("debian/1", ["web1", "web2"]),  # a part: also debian/10, 11, 12
        ("win", ["db1"]),
        ("microsoft.com/win/2k19", ["db1"]),
        ("rhel/9", ["db2"]),
        ("http://", ["db1", "db2", "web1", "web2"]),  # every VM whose guest OS is known
        ("ubuntu", []),
        ("debian12", []),  # the short name is not part of the id
    ],
)
def test_the_guest_os_filter_is_a_part_of_the_id_in_any_case(
    wanted: str, expected: list[str]
) -> None:
    assert names(VmQuery(guest_os=wanted)) == expected


def test_without_the_filter_every_vm_counts_also_those_without_a_guest_os() -> None:
    assert names(VmQuery()) == ["cache1", "db1", "db2", "web1", "web2"]


def test_the_filter_combines_with_the_others_and_the_total_counts_its_matches() -> None:
    query = VmQuery(guest_os="debian", state=VmState.RUNNING, memory_min_mib=1024)
    assert names(query) == ["web1"]
    page, total = select_vms(RECORDS, {}, VmQuery(guest_os="http", limit=2, offset=1))
    assert ([r.spec.name for r in page], total) == (["db2", "web1"], 4)
    tagged = {"web2": ("tier:1",), "db1": ("tier:1",)}
    assert names(VmQuery(guest_os="win", tags=("tier:1",)), tagged) == ["db1"]


# -- GET /vms ----------------------------------------------------------------------------


def listed(api: Api, query: str) -> tuple[int, dict[str, object]]:
    done = api.client.get(f"/api/v1/vms?{query}", headers=api.as_("viewer"))
    return done.status_code, done.json()


def test_the_api_filters_by_guest_os(api: Api) -> None:
    api.inventory.records = list(RECORDS)
    status, page = listed(api, "guest_os=Debian")
    assert status == 200
    items = page["items"]
    assert isinstance(items, list)
    assert [(i["name"], i["guest_os"], i["spec"]["guest_os"]) for i in items] == [
        ("web1", DEBIAN12, DEBIAN12), ("web2", DEBIAN12, DEBIAN12),
    ]  # fmt: skip
    assert (page["total"], page["next_offset"]) == (2, None)
    status, page = listed(api, "guest_os=win&host=kvm2&state=running")
    assert status == 200 and [i["name"] for i in page["items"]] == ["db1"]  # type: ignore[attr-defined]
    status, page = listed(api, "guest_os=ubuntu")
    assert status == 200 and (page["items"], page["total"]) == ([], 0)


@pytest.mark.parametrize("query", ["guest_os=", f"guest_os={'x' * 256}"])
def test_an_empty_or_overlong_guest_os_filter_is_a_422(api: Api, query: str) -> None:
    status, body = listed(api, query)
    assert status == 422
    problems = body["detail"]
    assert isinstance(problems, list) and [p["path"] for p in problems] == ["query.guest_os"]


def test_a_vm_without_a_guest_os_shows_null(api: Api) -> None:
    api.inventory.records = list(RECORDS)
    done = api.client.get("/api/v1/vms/cache1", headers=api.as_("viewer"))
    assert done.status_code == 200
    assert (done.json()["guest_os"], done.json()["spec"]["guest_os"]) == (None, None)
    one = api.client.get("/api/v1/vms/db1", headers=api.as_("viewer")).json()
    assert (one["guest_os"], one["spec"]["guest_os"]) == (WIN2K19, WIN2K19)


# -- the JSON shape -------------------------------------------------------------------------


def test_the_spec_json_ends_with_the_guest_os_and_reads_back() -> None:
    spec = replace(RECORDS[0].spec, guest_os=DEBIAN12)
    document = to_jsonable(spec)
    assert list(document)[-1] == "guest_os" and document["guest_os"] == DEBIAN12
    assert from_jsonable(VmSpec, document) == spec
    assert to_jsonable(RECORDS[-1].spec)["guest_os"] is None  # cache1: unknown


def test_a_spec_from_a_server_without_guest_os_reads_as_unknown() -> None:
    document = to_jsonable(RECORDS[0].spec)
    del document["guest_os"]
    assert from_jsonable(VmSpec, document).guest_os is None


def test_every_existing_constructor_still_works() -> None:
    spec = VmSpec("a", "u", 1, 2**30)
    assert spec.guest_os is None
