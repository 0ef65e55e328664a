"""The role rules (vmferry.server.roles.decide): every role against every action, written
out by hand, and self-service against its own and another project's VM."""

from __future__ import annotations

import pytest

from vmferry.model.account import Role
from vmferry.server.roles import Action, decide

ADM, OPR, PLN, VWR = Role.ADMIN, Role.OPERATOR, Role.PLANNER, Role.VIEWER

# action: the roles (not bound to a project) that may do it
ALLOWED: dict[Action, set[Role]] = {
    Action.HOSTS_READ: {ADM, OPR, PLN, VWR},
    Action.HOSTS_WRITE: {ADM, OPR},
    Action.VMS_READ: {ADM, OPR, PLN, VWR},
    Action.VMS_TAG: {ADM, OPR},
    Action.CHECK: {ADM, OPR, PLN},
    Action.PREDICT: {ADM, OPR, PLN},
    Action.PROFILE: {ADM, OPR, PLN},
    Action.MIGRATE: {ADM, OPR},
    Action.IMPORT: {ADM, OPR},
    Action.PLANS_READ: {ADM, OPR, PLN, VWR},
    Action.PLANS_WRITE: {ADM, OPR, PLN},
    Action.PLANS_RUN: {ADM, OPR},
    Action.JOBS_READ: {ADM, OPR, PLN, VWR},
    Action.JOBS_CANCEL: {ADM, OPR},
    Action.JOBS_RESUME: {ADM, OPR},
    Action.NETPROFILES_READ: {ADM, OPR, PLN, VWR},
    Action.NETPROFILES_WRITE: {ADM, OPR},
    Action.AUDIT_READ: {ADM, OPR, PLN, VWR},
    Action.USERS_READ: {ADM},
    Action.USERS_WRITE: {ADM},
}


def test_the_table_covers_every_action() -> None:
    assert set(ALLOWED) == set(Action)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_every_role_against_every_action(role: Role, action: Action) -> None:
    decision = decide(role, None, action, ("project:web",))
    assert decision.allowed == (role in ALLOWED[action]), decision
    assert decision.rule and decision.reason


@pytest.mark.parametrize(
    ("role", "action", "rule"),
    [
        (VWR, Action.MIGRATE, "role.viewer.read-only"),
        (PLN, Action.MIGRATE, "role.planner"),
        (PLN, Action.PLANS_RUN, "role.planner"),
        (OPR, Action.USERS_WRITE, "admin-only"),
        (VWR, Action.USERS_READ, "admin-only"),
    ],
)
def test_a_refusal_names_its_rule(role: Role, action: Action, rule: str) -> None:
    decision = decide(role, None, action)
    assert (decision.allowed, decision.rule) == (False, rule)


# self-service: an operator bound to project "web"
SELF_ALLOWED_ON_OWN_VM = {Action.CHECK, Action.PREDICT, Action.PROFILE, Action.MIGRATE,
                          Action.JOBS_CANCEL, Action.JOBS_RESUME, Action.HOSTS_READ,
                          Action.VMS_READ, Action.PLANS_READ, Action.JOBS_READ,
                          Action.NETPROFILES_READ}  # fmt: skip


@pytest.mark.parametrize("action", list(Action))
def test_self_service_on_its_own_projects_vm(action: Action) -> None:
    decision = decide(OPR, "web", action, ("tier:1", "project:web"))
    assert decision.allowed == (action in SELF_ALLOWED_ON_OWN_VM), decision
    if not decision.allowed:
        expected = "admin-only" if action.value.startswith("users.") else "self-service.fleet-wide"
        assert decision.rule == expected


@pytest.mark.parametrize(
    "action",
    [Action.CHECK, Action.PREDICT, Action.PROFILE, Action.MIGRATE, Action.JOBS_CANCEL,
     Action.JOBS_RESUME],
)  # fmt: skip
@pytest.mark.parametrize("tags", [("project:db",), (), None, ("web",), ("project:web2",)])
def test_self_service_against_another_projects_vm_is_refused(
    action: Action, tags: tuple[str, ...] | None
) -> None:
    decision = decide(OPR, "web", action, tags)
    assert (decision.allowed, decision.rule) == (False, "self-service.project")
    assert "project:web" in decision.reason


def test_self_service_never_goes_past_its_role() -> None:
    assert decide(VWR, "web", Action.MIGRATE, ("project:web",)).rule == "role.viewer.read-only"
    assert decide(PLN, "web", Action.MIGRATE, ("project:web",)).allowed is False
    assert decide(PLN, "web", Action.PREDICT, ("project:web",)).allowed is True
