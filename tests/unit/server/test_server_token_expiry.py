"""Tokens that expire (`vmferry users add|token --expires`): the pure decision, the parsing of
``--expires``, the store (SQLite and PostgreSQL), and the API: an expired token is a 401 that
says so on every route and writes nothing; a token works until its time, judged at the
app's injected clock (``app.state.vmferry_clock``), whatever the server remembers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import Api, serving
from sqlalchemy import select
from sqlalchemy.orm import Session

from vmferry.errors import BadInputError
from vmferry.model.account import token_expired
from vmferry.service import audit as audit_service
from vmferry.service import users
from vmferry.store import accounts
from vmferry.store.db import Store
from vmferry.store.tables import UserRow

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


# -- the decision -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "now", "expired"),
    [
        (None, T0, False),
        (None, datetime.max.replace(tzinfo=UTC), False),
        (T0, T0 - SECOND, False),
        (T0, T0 - timedelta(microseconds=1), False),
        (T0, T0, True),  # from its expiry on
        (T0, T0 + SECOND, True),
        (T0, T0.astimezone(timezone(timedelta(hours=2))), True),  # same moment, other zone
        (T0, (T0 - SECOND).astimezone(timezone(timedelta(hours=-5))), False),
    ],
)
def test_a_token_is_expired_from_its_expiry_on(
    expires_at: datetime | None, now: datetime, expired: bool
) -> None:
    assert token_expired(expires_at, now) is expired


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", T0 + timedelta(days=30)),
        ("12h", T0 + timedelta(hours=12)),
        ("90m", T0 + timedelta(minutes=90)),
        ("2w", T0 + timedelta(weeks=2)),
        (" 1d ", T0 + timedelta(days=1)),
        ("2026-12-31T00:00Z", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-12-31T01:00+01:00", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-12-31T00:00", datetime(2026, 12, 31, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC)),  # a date: its midnight, UTC
    ],
)
def test_expires_takes_a_duration_or_a_time(text: str, expected: datetime) -> None:
    parsed = users.parse_expiry(text, T0)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_a_duration_ends_on_a_whole_second() -> None:
    now = T0.replace(microsecond=999_999)
    assert users.parse_expiry("1h", now) == T0 + timedelta(hours=1)


def test_the_store_keeps_an_expiry_to_the_millisecond_it_shows(store: Store) -> None:
    given = T0 + timedelta(days=1, microseconds=123_456)
    user, token = users.add_user(store, "precise", "viewer", expires_at=given)
    assert user.token_expires_at == "2026-12-05T08:00:00.123Z"
    shown = datetime(2026, 12, 5, 8, 0, 0, 123_000, tzinfo=UTC)
    assert users.authenticate(store, token, shown - timedelta(microseconds=1)) == user
    assert users.authenticate(store, token, shown) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("yesterday", "give a duration"),
        ("30", "give a duration"),
        ("30y", "give a duration"),
        ("-5d", "give a duration"),
        ("1.5d", "give a duration"),
        ("", "give a duration"),
        ("0d", "must live longer"),
        ("999999999w", "later than the calendar goes"),
        ("2026-12-04T08:00Z", "has passed already"),  # now is not later than now
        ("2020-01-01T00:00Z", "has passed already"),
        ("2026-13-01", "give a duration"),
    ],
)
def test_bad_expires_is_bad_input_naming_it(text: str, says: str) -> None:
    with pytest.raises(BadInputError) as raised:
        users.parse_expiry(text, T0)
    assert says in str(raised.value)
    assert repr(text) in str(raised.value)


# -- the store ----------------------------------------------------------------------------


def test_the_store_keeps_the_expiry_and_a_new_token_without_one_never_expires(
    store: Store,
) -> None:
    expires = T0 + timedelta(days=30)
    user, token = users.add_user(store, "temp", "viewer", expires_at=expires)
    assert user.token_expires_at == "2027-01-03T08:00:00.000Z"
    assert [u.token_expires_at for u in users.list_users(store)] == ["2027-01-03T08:00:00.000Z"]
    found = accounts.credentials_for_token(store, token.split("_")[1])
    assert found is not None and found.expires_at == expires
    assert users.authenticate(store, token, expires - SECOND) == user
    assert users.authenticate(store, token, expires) is None

    renewed, second = users.new_token(store, "temp")
    assert renewed.token_expires_at is None
    assert users.authenticate(store, second, expires + timedelta(days=3650)) == renewed
    assert users.authenticate(store, token, expires - SECOND) is None  # the old one: replaced


def test_an_expiry_in_another_zone_is_stored_as_the_same_moment(store: Store) -> None:
    paris = datetime(2026, 12, 31, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    user, token = users.add_user(store, "zoned", "viewer", expires_at=paris)
    assert user.token_expires_at == "2026-12-31T00:00:00.000Z"
    assert users.authenticate(store, token, datetime(2026, 12, 30, 23, 59, tzinfo=UTC))
    assert users.authenticate(store, token, datetime(2026, 12, 31, tzinfo=UTC)) is None


def test_what_the_process_remembers_does_not_keep_an_expired_token_valid(store: Store) -> None:
    expires = T0 + timedelta(hours=1)
    user, token = users.add_user(store, "cached", "operator", expires_at=expires)
    assert users.check_token(store, token, T0) == users.TokenCheck(user)  # now remembered
    assert users.check_token(store, token, expires - SECOND) == users.TokenCheck(user)
    assert users.check_token(store, token, expires) == users.TokenCheck(None, expired=True)
    # the store is the truth: an expiry set there after the token was remembered counts
    renewed, fresh = users.new_token(store, "cached")
    assert users.check_token(store, fresh, T0) == users.TokenCheck(renewed)
    with Session(store.engine) as session, session.begin():
        row = session.scalars(select(UserRow).where(UserRow.name == "cached")).one()
        row.token_expires_at = T0
    assert users.check_token(store, fresh, T0) == users.TokenCheck(None, expired=True)


def test_only_the_right_token_learns_that_it_expired(store: Store) -> None:
    _user, token = users.add_user(store, "gone", "viewer", expires_at=T0 + SECOND)
    prefix = token.rsplit("_", 1)[0]
    for wrong in (f"{prefix}_not-the-secret", f"{prefix}_{'A' * 43}"):
        assert users.check_token(store, wrong, T0 + timedelta(days=1)) == users.TokenCheck(None)
    assert users.check_token(store, token, T0 + timedelta(days=1)).expired


def test_removing_a_user_clears_its_expiry(store: Store) -> None:
    users.add_user(store, "brief", "viewer", expires_at=T0 + SECOND)
    users.remove_user(store, "brief")
    with Session(store.engine) as session:
        row = session.scalars(select(UserRow).where(UserRow.name == "brief")).one()
        assert (row.token_id, row.token_hash, row.token_expires_at) == (None, None, None)


# -- the API ------------------------------------------------------------------------------


class Clock:
    """The app's clock, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def timed(store: Store) -> Iterator[tuple[Api, Clock]]:
    with serving(store) as api:
        clock = Clock(T0)
        api.client.app.state.vmferry_clock = clock  # type: ignore[attr-defined]
        yield api, clock


def routes(api: Api) -> list[tuple[str, str]]:
    """Every route of the API, its path parameters filled in."""
    schema = api.client.get("/openapi.json").json()
    found = []
    for path, operations in schema["paths"].items():
        for method in operations:
            filled = path
            for name in ("job_id", "vm_id", "name", "plan_id", "host"):
                filled = filled.replace("{" + name + "}", "web1")
            assert "{" not in filled, path
            found.append((method.upper(), filled))
    return found


def test_an_expired_token_is_a_401_on_every_route_and_writes_nothing(
    timed: tuple[Api, Clock],
) -> None:
    api, clock = timed
    _user, token = users.add_user(api.store, "late", "admin", expires_at=T0 - SECOND)
    api.tokens["late"] = token
    before = audit_service.entries(api.store)
    tags = accounts.vm_tags(api.store)
    every = routes(api)
    assert {("GET", "/api/v1/users"), ("POST", "/api/v1/migrations"),
            ("PUT", "/api/v1/vms/web1/tags"),
            ("GET", "/api/v1/jobs/web1/events")} <= set(every)  # fmt: skip
    wrong = []
    for method, url in every:
        done = api.client.request(method, url, headers=api.as_("late"), json={})
        if (done.status_code, done.json(), done.headers.get("www-authenticate")) != (
            401, {"detail": "the token expired"}, "Bearer",
        ):  # fmt: skip
            wrong.append((method, url, done.status_code, done.text[:200]))
    assert wrong == []
    assert audit_service.entries(api.store) == before
    assert accounts.vm_tags(api.store) == tags
    assert api.store.list_jobs() == []
    # the same user's next token, without --expires, works at the same clock
    _renewed, fresh = users.new_token(api.store, "late")
    clock.now = T0 + timedelta(days=3650)
    renewed = {"Authorization": f"Bearer {fresh}"}
    assert api.client.get("/api/v1/hosts", headers=renewed).status_code == 200


def test_a_token_works_until_its_time(timed: tuple[Api, Clock]) -> None:
    api, clock = timed
    expires = T0 + timedelta(hours=1)
    _user, token = users.add_user(api.store, "shift", "operator", expires_at=expires)
    auth = {"Authorization": f"Bearer {token}"}
    tagged = {"tags": ["project:web", "tier:2"]}
    assert api.client.get("/api/v1/vms?limit=1", headers=auth).status_code == 200
    clock.now = expires - SECOND
    assert api.client.put("/api/v1/vms/web1/tags", headers=auth, json=tagged).status_code == 200
    rows = len(audit_service.entries(api.store))
    clock.now = expires  # the server has checked this token: its memory does not count
    for method, url, body in (("GET", "/api/v1/vms", None), ("GET", "/api/v1/jobs", None),
                              ("PUT", "/api/v1/vms/web1/tags", {"tags": []})):  # fmt: skip
        done = api.client.request(method, url, headers=auth, json=body)
        assert (done.status_code, done.json()) == (401, {"detail": "the token expired"})
    assert accounts.tags_of(api.store, "web1") == ("project:web", "tier:2")
    assert len(audit_service.entries(api.store)) == rows
    clock.now = expires - SECOND  # a clock set back: valid again (the expiry is a moment)
    assert api.client.get("/api/v1/jobs", headers=auth).status_code == 200


def test_a_wrong_token_is_not_said_to_be_expired(timed: tuple[Api, Clock]) -> None:
    api, clock = timed
    _user, token = users.add_user(api.store, "old", "viewer", expires_at=T0 - SECOND)
    guessed = token.rsplit("_", 1)[0] + "_" + "B" * 43
    clock.now = T0 + timedelta(days=1)
    done = api.client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {guessed}"})
    assert (done.status_code, done.json()) == (
        401, {"detail": "the token is not valid (wrong, replaced or its user removed)"},
    )  # fmt: skip


def test_the_user_list_shows_each_tokens_expiry(timed: tuple[Api, Clock]) -> None:
    api, _clock = timed
    users.add_user(api.store, "month", "viewer", expires_at=T0 + timedelta(days=30))
    listed = {
        u["name"]: u for u in api.client.get("/api/v1/users", headers=api.as_("admin")).json()
    }
    assert listed["month"]["token_expires_at"] == "2027-01-03T08:00:00.000Z"
    assert listed["admin"]["token_expires_at"] is None
