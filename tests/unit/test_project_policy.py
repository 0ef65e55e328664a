"""Self-service policies (issue 13 item 3): weekly windows (across midnight, across the
week's end, in time zones with daylight saving time), the decision and its rules, the
store on SQLite and PostgreSQL, `vmferry projects`, and the server's check (a 403 naming
the rule, through the app's own error handler and audit trail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from vmferry.errors import BadInputError, NotFoundError
from vmferry.model.account import Role, User
from vmferry.model.project_policy import (
    DAY_MIN,
    WEEK_MIN,
    PolicyError,
    allowed_move,
    make_policy,
    minute_of_week,
    parse_window,
)
from vmferry.server.app import create_app
from vmferry.server.auth import CurrentUser
from vmferry.server.errors import Refused
from vmferry.server.project_rules import check_self_service_move
from vmferry.service import audit, projects, users
from vmferry.store import project_policies
from vmferry.store.db import Store

UTC_ZONE = ZoneInfo("UTC")


def at(text: str, tz: str = "UTC") -> datetime:
    """An aware moment: '2026-12-05 23:00' on the wall clock of ``tz``."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


# 2026-12-05 is a Saturday, 2026-12-07 a Monday.

# -- windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "spans"),
    [
        ("Sat 22:00-Sun 04:00", "Sat 22:00-Sun 04:00", ((5 * DAY_MIN + 1320, 6 * DAY_MIN + 240),)),
        ("sat 22:00 - sunday 4:00", "Sat 22:00-Sun 04:00",
         ((5 * DAY_MIN + 1320, 6 * DAY_MIN + 240),)),
        ("Fri 22:00-02:00", "Fri 22:00-Sat 02:00", ((4 * DAY_MIN + 1320, 5 * DAY_MIN + 120),)),
        ("Mon 09:00-17:30", "Mon 09:00-Mon 17:30", ((540, 1050),)),
        ("Sun 22:00-Mon 02:00", "Sun 22:00-Mon 02:00", ((6 * DAY_MIN + 1320, WEEK_MIN + 120),)),
        ("Sat 10:00-24:00", "Sat 10:00-Sat 24:00", ((5 * DAY_MIN + 600, 6 * DAY_MIN),)),
        ("always", "always", ((0, WEEK_MIN),)),
    ],
)  # fmt: skip
def test_the_window_forms(text: str, canonical: str, spans: tuple[tuple[int, int], ...]) -> None:
    window = parse_window(text)
    assert (window.text, window.spans) == (canonical, spans)


def test_a_daily_window_is_one_span_a_day() -> None:
    window = parse_window("daily 22:00-02:00")
    assert window.text == "daily 22:00-02:00"
    assert window.spans == tuple((d * DAY_MIN + 1320, d * DAY_MIN + 1560) for d in range(7))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Sat 22:00", "is not one vmferry knows"),
        ("Caturday 22:00-23:00", "'Caturday' is not a day"),
        ("Sat 24:30-Sun 01:00", "24:30 is not a time of day"),
        ("Sat 22:60-23:00", "22:60 is not a time of day"),
        ("Sat 22:00-Sat 22:00", "ends where it starts"),
        ("daily 10:00-10:00", "ends where it starts"),
        ("", "is not one vmferry knows"),
    ],
)
def test_a_bad_window_is_one_line(text: str, says: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_window(text)
    assert says in str(caught.value) and "\n" not in str(caught.value)


WEEKEND = make_policy("web", "live,warm", ["Sat 22:00-Sun 04:00"])
WRAP = make_policy("web", "live", ["Sun 22:00-Mon 02:00"])
NIGHTLY = make_policy("web", "live", ["daily 23:00-01:00"])


@pytest.mark.parametrize(
    ("policy", "moment", "allowed"),
    [
        (WEEKEND, "2026-12-05 21:59", False),  # Saturday, before the start
        (WEEKEND, "2026-12-05 22:00", True),  # the start is inside
        (WEEKEND, "2026-12-05 23:59", True),
        (WEEKEND, "2026-12-06 00:00", True),  # Sunday after midnight
        (WEEKEND, "2026-12-06 03:59", True),
        (WEEKEND, "2026-12-06 04:00", False),  # the end is outside
        (WEEKEND, "2026-12-12 23:00", True),  # every week
        (WEEKEND, "2026-12-08 23:00", False),  # a Tuesday
        (WRAP, "2026-12-06 22:00", True),  # Sunday night
        (WRAP, "2026-12-07 00:30", True),  # Monday: the next week
        (WRAP, "2026-12-07 02:00", False),
        (WRAP, "2026-11-30 01:59", True),  # the Monday before
        (WRAP, "2026-12-06 21:59", False),
        (NIGHTLY, "2026-12-07 00:59", True),  # Sunday's window, after midnight
        (NIGHTLY, "2026-12-06 23:30", True),  # Sunday into Monday (the week's end)
        (NIGHTLY, "2026-12-09 12:00", False),
    ],
)
def test_windows_across_midnight_and_the_weeks_end(policy: Any, moment: str,
                                                   allowed: bool) -> None:  # fmt: skip
    decision = allowed_move(policy, "live", at(moment))
    assert decision.allowed is allowed, decision.reason
    assert decision.rule == "self-service.window"


PARIS = make_policy("web", "live", ["Sat 22:00-Sun 04:00"], "Europe/Paris")


@pytest.mark.parametrize(
    ("moment_utc", "allowed"),
    [
        ("2026-12-05 20:59", False),  # winter: 21:59 in Paris (UTC+1)
        ("2026-12-05 21:00", True),  # 22:00 in Paris
        ("2026-12-06 02:59", True),  # 03:59
        ("2026-12-06 03:00", False),  # 04:00
        ("2026-07-04 19:59", False),  # summer: 21:59 in Paris (UTC+2)
        ("2026-07-04 20:00", True),
        ("2026-07-05 01:59", True),
        ("2026-07-05 02:00", False),
        ("2026-03-28 21:30", True),  # the night the clocks go forward: 22:30 CET
        ("2026-03-29 01:30", True),  # 03:30 CEST (02:00-03:00 never happens)
        ("2026-03-29 02:00", False),  # 04:00 CEST
        ("2026-10-24 22:00", True),  # the night they go back: 00:00 CEST
        ("2026-10-25 02:30", True),  # 03:30 CET, after 02:00-03:00 twice
        ("2026-10-25 03:00", False),  # 04:00 CET
    ],
)
def test_windows_follow_the_wall_clock_of_their_time_zone(moment_utc: str,
                                                          allowed: bool) -> None:  # fmt: skip
    moment = at(moment_utc)
    assert allowed_move(PARIS, "live", moment).allowed is allowed
    # the same instant written in another zone is the same answer
    same = moment.astimezone(ZoneInfo("America/New_York"))
    assert allowed_move(PARIS, "live", same).allowed is allowed


def test_the_rules_no_policy_then_strategy_then_window() -> None:
    none = allowed_move(None, "live", at("2026-12-05 23:00"))
    assert (none.allowed, none.rule) == (False, "self-service.no-policy")
    assert "vmferry projects set" in none.reason
    cold = allowed_move(WEEKEND, "cold", at("2026-12-05 23:00"))
    assert (cold.allowed, cold.rule) == (False, "self-service.strategy")
    assert cold.reason == "project web may move its VMs by live, warm only, not cold"
    closed = allowed_move(WEEKEND, "cold", at("2026-12-08 10:15"))  # strategy first
    assert closed.rule == "self-service.strategy"
    shut = allowed_move(WEEKEND, "warm", at("2026-12-08 10:15"))
    assert (shut.allowed, shut.rule) == (False, "self-service.window")
    assert shut.reason == ("project web moves only within Sat 22:00-Sun 04:00 (UTC); it is "
                           "Tue 10:15 there now")  # fmt: skip
    ok = allowed_move(WEEKEND, "warm", at("2026-12-05 23:00"))
    assert (ok.allowed, ok.reason) == (True, "warm inside the window Sat 22:00-Sun 04:00 (UTC)")
    with pytest.raises(ValueError, match="aware"):
        allowed_move(WEEKEND, "live", datetime(2026, 12, 5, 23, 0))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("web", "live,teleport", ["always"]), "unknown strategy 'teleport'"),
        (("web", ",", ["always"]), "give at least one strategy"),
        (("web", "live", []), "give at least one --window"),
        (("web", "live", ["always"], "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (("web", "live", ["always"], "../etc/passwd"), "unknown time zone"),
    ],
)
def test_a_bad_policy_is_one_line(args: tuple[Any, ...], says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        make_policy(*args)


def test_strategies_are_kept_in_one_order() -> None:
    assert make_policy("p", "cold, LIVE,warm,live", ["always"]).strategies == (
        "live", "warm", "cold",
    )  # fmt: skip


minutes = st.integers(min_value=0, max_value=WEEK_MIN - 1)


@settings(max_examples=400, deadline=None)
@given(start=minutes, length=st.integers(min_value=1, max_value=WEEK_MIN - 1),
       moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                           timezones=st.sampled_from([UTC_ZONE, ZoneInfo("Asia/Kolkata"),
                                                      ZoneInfo("America/St_Johns")])),
       tz=st.sampled_from(["UTC", "Europe/Paris", "Australia/Lord_Howe",
                           "Pacific/Chatham"]))  # fmt: skip
def test_a_window_holds_exactly_the_minutes_from_its_start_for_its_length(
    start: int, length: int, moment: datetime, tz: str
) -> None:
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    end = (start + length) % WEEK_MIN
    text = (f"{days[start // DAY_MIN]} {start % DAY_MIN // 60:02d}:{start % 60:02d}-"
            f"{days[end // DAY_MIN]} {end % DAY_MIN // 60:02d}:{end % 60:02d}")  # fmt: skip
    policy = make_policy("p", "live", [text], tz)
    local = moment.astimezone(ZoneInfo(tz))
    minute = local.weekday() * DAY_MIN + local.hour * 60 + local.minute
    assert minute_of_week(moment, tz) == minute
    inside = (minute - start) % WEEK_MIN < length  # brute force: minutes since the start
    assert allowed_move(policy, "live", moment).allowed is inside


# -- the store, the service, the command line ---------------------------------------------


def test_policies_round_trip_through_the_store(store: Store) -> None:
    assert project_policies.get_policy(store, "web") is None
    windows = ["Sat 22:00-Sun 04:00", "daily 12:00-13:00"]
    web = projects.set_policy(store, "web", "warm,live", windows, "Europe/Paris")
    db = projects.set_policy(store, "db", "cold", ["always"])
    assert project_policies.get_policy(store, "web") == web
    assert projects.list_policies(store) == [db, web]
    again = projects.set_policy(store, "web", "live", ["Fri 22:00-02:00"])  # replaces it
    assert projects.show_policy(store, "web") == again
    assert again.window_texts == ("Fri 22:00-Sat 02:00",) and again.tz == "UTC"
    projects.remove_policy(store, "web")
    with pytest.raises(NotFoundError, match="project 'web' has no policy"):
        projects.show_policy(store, "web")
    with pytest.raises(NotFoundError):
        projects.remove_policy(store, "web")
    with pytest.raises(BadInputError, match="project 'bad name'"):
        projects.set_policy(store, "bad name", "live", ["always"])
    with pytest.raises(BadInputError, match="unknown strategy"):
        projects.set_policy(store, "db", "fast", ["always"])
    assert projects.list_policies(store) == [db]  # nothing written by the bad ones


def vmferry(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VMFERRY_DB": f"sqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_projects_set_show_list_remove(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    done = vmferry("projects", "set", "web", "--strategies", "live,warm", "--window",
                   "Sat 22:00-Sun 04:00", "--window", "daily 12:00-13:00", "--tz",
                   "Europe/Paris", db=db)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("project web\n  strategies live, warm\n"
                           "  window Sat 22:00-Sun 04:00 (Europe/Paris)\n"
                           "  window daily 12:00-13:00 (Europe/Paris)\n")  # fmt: skip
    shown = vmferry("projects", "show", "web", "--json", db=db)
    assert json.loads(shown.stdout) == {"project": "web", "strategies": ["live", "warm"],
                                        "windows": ["Sat 22:00-Sun 04:00", "daily 12:00-13:00"],
                                        "tz": "Europe/Paris"}  # fmt: skip
    assert vmferry("projects", "set", "db", "--strategies", "cold", "--window", "always",
                   db=db).returncode == 0  # fmt: skip
    listed = json.loads(vmferry("projects", "list", "--json", db=db).stdout)
    assert [p["project"] for p in listed] == ["db", "web"]
    removed = vmferry("projects", "remove", "db", db=db)
    assert removed.returncode == 0 and removed.stdout == "project db: policy removed\n"
    missing = vmferry("projects", "show", "db", db=db)
    assert missing.returncode == 2 and missing.stderr.startswith("vmferry: project 'db' has no")
    from vmferry.store.db import open_store

    with open_store(f"sqlite:///{db}") as opened:
        trail = [(e.action, e.target) for e in audit.entries(opened)]
    assert trail == [("projects.set", "web"), ("projects.set", "db"), ("projects.remove", "db")]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--strategies", "live"], "give at least one --window"),
        (["--strategies", "beam", "--window", "always"], "unknown strategy 'beam'"),
        (["--strategies", "live", "--window", "Sat 25:00-Sun 01:00"], "25:00 is not a time"),
        (["--strategies", "live", "--window", "always", "--tz", "Nowhere"], "unknown time zone"),
    ],
)
def test_bad_project_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: list[str], says: str
) -> None:
    db = tmp_path / "cli.db"
    done = vmferry("projects", "set", "web", *args, db=db)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmferry: ") and says in lines[0], lines
    assert done.stdout == ""
    assert json.loads(vmferry("projects", "list", "--json", db=db).stdout) == []


# -- the server's check ---------------------------------------------------------------------


def user(project: str | None) -> User:
    return User("u", Role.OPERATOR, project, "2026-12-05T00:00:00.000Z")


def test_the_check_refuses_as_the_roles_do(store: Store) -> None:
    saturday_night, tuesday = at("2026-12-05 23:00"), at("2026-12-08 10:00")
    assert check_self_service_move(store, user(None), "cold", tuesday) is None  # not bound
    with pytest.raises(Refused) as none:
        check_self_service_move(store, user("web"), "live", saturday_night)
    assert none.value.rule == "self-service.no-policy"
    projects.set_policy(store, "web", "live,warm", ["Sat 22:00-Sun 04:00"])
    with pytest.raises(Refused) as strategy:
        check_self_service_move(store, user("web"), "postcopy", saturday_night)
    assert strategy.value.rule == "self-service.strategy"
    with pytest.raises(Refused) as window:
        check_self_service_move(store, user("web"), "live", tuesday)
    assert window.value.rule == "self-service.window"
    decision = check_self_service_move(store, user("web"), "warm", saturday_night)
    assert decision is not None and decision.allowed


def _no_move(*_args: object, **_kwargs: object) -> Any:
    raise AssertionError("nothing moves in these tests")


@pytest.fixture
def app_with_check(store: Store) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The real app (its error handlers and audit trail) with one route more that asks the
    check what POST /migrations will ask it, now."""
    app = create_app(store, migrate=_no_move)

    def try_move(strategy: str, request: Request, who: CurrentUser) -> dict[str, str]:
        request.state.action = "migrate"
        decision = check_self_service_move(store, who, strategy, datetime.now(UTC),
                                           request=request)  # fmt: skip
        return {"rule": decision.rule if decision else "not self-service"}

    app.add_api_route("/api/v1/test-self-service/{strategy}", try_move, methods=["POST"])
    tokens = {name: users.add_user(store, name, "operator", project)[1]
              for name, project in (("ops", None), ("webteam", "web"))}  # fmt: skip
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens


def test_a_refused_self_service_move_is_a_403_naming_the_rule_in_the_trail(
    store: Store, app_with_check: tuple[TestClient, dict[str, str]]
) -> None:
    client, tokens = app_with_check

    def post(who: str, strategy: str) -> Any:
        return client.post(f"/api/v1/test-self-service/{strategy}",
                           headers={"Authorization": f"Bearer {tokens[who]}"})  # fmt: skip

    refused = post("webteam", "live")
    assert refused.status_code == 403
    assert refused.json()["rule"] == "self-service.no-policy"
    assert post("ops", "cold").json() == {"rule": "not self-service"}
    now = datetime.now(UTC)
    later = now + timedelta(hours=3)  # a window that is certainly not now
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    closed = f"{days[later.weekday()]} {later:%H}:00-{(later + timedelta(hours=1)):%H}:00"
    projects.set_policy(store, "web", "live", [closed])
    assert post("webteam", "live").json()["rule"] == "self-service.window"
    assert post("webteam", "warm").json()["rule"] == "self-service.strategy"
    projects.set_policy(store, "web", "live", ["always"])
    allowed = post("webteam", "live")
    assert allowed.status_code == 200 and allowed.json() == {"rule": "self-service.window"}
    rows = [(e.user, e.result, e.detail.get("rule")) for e in audit.entries(store)
            if e.action == "migrate"]  # fmt: skip
    assert rows == [
        ("webteam", "refused", "self-service.no-policy"), ("ops", "ok", None),
        ("webteam", "refused", "self-service.window"),
        ("webteam", "refused", "self-service.strategy"), ("webteam", "ok", "self-service.window"),
    ]  # fmt: skip
