"""Who may do what: a pure function of the user's role and project, the action, and the
target VM's tags. Every refusal names the rule that refused (the API's 403 carries it).

- ``admin``: everything.
- ``operator``: hosts, inventory and tags, check, predict, profile, migrations, imports,
  plans (run them too), port profiles, cancelling and resuming jobs, and every read but the
  user list.
- ``planner``: profile, predict, check, and plans without running them; reads.
- ``viewer``: reads only.
- **self-service**: a user bound to a project (any role but admin) acts only on VMs tagged
  ``project:P``, and only by check, predict, profile, migrate and cancelling or resuming
  their jobs, as far as its role allows; fleet-wide changes and the audit trail are refused
  to it. It reads hosts, inventory, jobs, plans and port profiles like its role.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vmferry.model.account import Role, project_of

__all__ = ["ROLE_ACTIONS", "VM_ACTIONS", "Action", "Decision", "decide"]


class Action(enum.StrEnum):
    """What a request does (the audit trail names it so too)."""

    HOSTS_READ = "hosts.read"
    HOSTS_WRITE = "hosts.write"
    VMS_READ = "vms.read"
    VMS_TAG = "vms.tag"
    CHECK = "check"
    PREDICT = "predict"
    PROFILE = "profile"
    MIGRATE = "migrate"
    IMPORT = "import"
    PLANS_READ = "plans.read"
    PLANS_WRITE = "plans.write"
    PLANS_RUN = "plans.run"
    JOBS_READ = "jobs.read"
    JOBS_CANCEL = "jobs.cancel"
    JOBS_RESUME = "jobs.resume"
    NETPROFILES_READ = "netprofiles.read"
    NETPROFILES_WRITE = "netprofiles.write"
    AUDIT_READ = "audit.read"
    USERS_READ = "users.read"
    USERS_WRITE = "users.write"


_READS = frozenset(
    {Action.HOSTS_READ, Action.VMS_READ, Action.PLANS_READ, Action.JOBS_READ, Action.AUDIT_READ,
     Action.NETPROFILES_READ}
)  # fmt: skip

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OPERATOR: _READS
    | {
        Action.HOSTS_WRITE,
        Action.VMS_TAG,
        Action.CHECK,
        Action.PREDICT,
        Action.PROFILE,
        Action.MIGRATE,
        Action.IMPORT,
        Action.PLANS_WRITE,
        Action.PLANS_RUN,
        Action.JOBS_CANCEL,
        Action.JOBS_RESUME,
        Action.NETPROFILES_WRITE,
    },
    Role.PLANNER: _READS | {Action.CHECK, Action.PREDICT, Action.PROFILE, Action.PLANS_WRITE},
    Role.VIEWER: _READS,
}

# What a user bound to a project may do, on its project's VMs only.
VM_ACTIONS = frozenset(
    {Action.CHECK, Action.PREDICT, Action.PROFILE, Action.MIGRATE, Action.JOBS_CANCEL,
     Action.JOBS_RESUME}
)  # fmt: skip
# What a user bound to a project may read (fleet-wide, like its role).
_SELF_SERVICE_READS = frozenset(
    {Action.HOSTS_READ, Action.VMS_READ, Action.PLANS_READ, Action.JOBS_READ,
     Action.NETPROFILES_READ}
)  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """Allowed or not, the rule that decided, and a line saying why."""

    allowed: bool
    rule: str
    reason: str


def decide(
    role: Role, project: str | None, action: Action, vm_tags: tuple[str, ...] | None = None
) -> Decision:
    """May a user with ``role`` (bound to ``project``, or None) do ``action``?

    ``vm_tags``: the tags of the VM acted on, for the actions in :data:`VM_ACTIONS` (None:
    no VM, or a fleet-wide request).
    """
    if role is Role.ADMIN:
        return Decision(True, "role.admin", "an admin may do everything")
    if action not in ROLE_ACTIONS[role]:
        if action in (Action.USERS_READ, Action.USERS_WRITE):
            return Decision(False, "admin-only", f"only an admin may {action}")
        if role is Role.VIEWER:
            return Decision(False, "role.viewer.read-only", f"a viewer only reads; not {action}")
        return Decision(False, f"role.{role}", f"a {role} may not {action}")
    if project is None:
        return Decision(True, f"role.{role}", f"a {role} may {action}")
    if action in _SELF_SERVICE_READS:
        return Decision(True, f"role.{role}", f"a {role} may {action}")
    if action not in VM_ACTIONS:
        return Decision(
            False, "self-service.fleet-wide",
            f"a user bound to project {project!r} may not {action}: only check, predict, "
            "profile, migrate, and cancel or resume the jobs of, the project's VMs",
        )  # fmt: skip
    if vm_tags is None or project not in project_of(vm_tags):
        return Decision(
            False, "self-service.project",
            f"a user bound to project {project!r} acts only on VMs tagged "
            f"project:{project}",
        )  # fmt: skip
    return Decision(True, "self-service.project", f"the VM belongs to project {project!r}")
