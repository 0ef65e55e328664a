"""POST /api/v1/migrations keeps a self-service user to its project's policy: the
strategies and weekly windows an admin allowed (`vmferry projects set`), and nothing
without a policy. A refusal is a 403 naming the rule, starts nothing and claims no
Idempotency-Key; users bound to no project are not concerned.

Not collected yet (its name does not start with ``test_``): it passes once
``start_migration`` calls ``vmferry.server.project_rules.check_self_service_move`` after
its ``authorize``; rename it to ``test_server_self_service_moves.py`` with that line.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Api
from test_server_api import trail

from vmferry.errors import NotFoundError
from vmferry.service import projects

MOVE = {"vm": "web1", "to": "kvm2", "strategy": "live"}


def post(api: Api, who: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = api.as_(who) | ({"Idempotency-Key": key} if key else {})
    return api.client.post("/api/v1/migrations", headers=headers, json=body)


def closed_window() -> str:
    """A one-hour window that opens two to three hours from now (so not now)."""
    later = datetime.now(UTC) + timedelta(hours=3)
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    return f"{days[later.weekday()]} {later:%H}:00-{later + timedelta(hours=1):%H}:00"


def test_a_project_without_a_policy_moves_nothing(api: Api) -> None:
    with suppress(NotFoundError):  # the fixture may give every project an open policy
        projects.remove_policy(api.store, "web")
    refused = post(api, "selfweb", MOVE, key="k-1")
    assert refused.status_code == 403, refused.text
    assert refused.json()["rule"] == "self-service.no-policy"
    assert api.migrate.calls == [] and api.store.list_jobs() == []
    assert trail(api)[-1:] == [("selfweb", "migrate", "web1", "refused")]
    # the refused request claimed no key: the same key works once there is a policy
    projects.set_policy(api.store, "web", "live", ["always"])
    assert post(api, "selfweb", MOVE, key="k-1").status_code == 202


def test_only_the_strategies_the_policy_allows(api: Api) -> None:
    projects.set_policy(api.store, "web", "live,warm", ["always"])
    refused = post(api, "selfweb", {**MOVE, "strategy": "cold"})
    assert refused.status_code == 403
    assert refused.json()["rule"] == "self-service.strategy"
    assert "live, warm only, not cold" in refused.json()["detail"]
    assert post(api, "selfweb", {**MOVE, "strategy": "warm"}).status_code == 202
    assert api.migrate.calls == [("web1", "kvm2", "warm")]


def test_only_within_the_policys_windows(api: Api) -> None:
    projects.set_policy(api.store, "web", "live", [closed_window()], "UTC")
    refused = post(api, "selfweb", MOVE)
    assert refused.status_code == 403
    assert refused.json()["rule"] == "self-service.window"
    assert api.migrate.calls == []
    projects.set_policy(api.store, "web", "live", [closed_window(), "always"], "UTC")
    assert post(api, "selfweb", MOVE).status_code == 202


def test_users_bound_to_no_project_are_not_concerned(api: Api) -> None:
    assert post(api, "operator", {**MOVE, "strategy": "cold"}).status_code == 202
    assert api.migrate.calls == [("web1", "kvm2", "cold")]


def test_another_projects_vm_is_refused_by_the_role_first(api: Api) -> None:
    projects.set_policy(api.store, "web", "live", ["always"])
    refused = post(api, "selfweb", {**MOVE, "vm": "db1"})
    assert refused.status_code == 403 and refused.json()["rule"] == "self-service.project"
