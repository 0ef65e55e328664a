"""Hooks around a move (docs/hooks.md): `vmferry hooks add|list|remove`, and running a
phase's hooks for a job with every attempt recorded in the job's events.

A move's hooks are the plan's (``hooks:`` at the plan's top and in the VM's entry) and the
VM's own (the store), merged by :func:`hooks_for`. :func:`run_hooks` runs one phase's:

- ``pre-migrate`` in order, stopping at the first failure (the move is blocked; the hooks
  after it are recorded as skipped);
- ``post-migrate`` all of them; a failing ``required`` one fails the verification. A move
  gets them through :class:`PostHookWitness`, so they run inside its verification, before
  the job's verdict: their job JSON shows the job still running, with the move's events;
- ``on-failure`` all of them, recorded only.

Each attempt is a job event of kind ``hook``: ``{"hook", "phase", "kind", "target",
"attempt", "result" (ok | failed | retrying | skipped), "status_code", "exit_code",
"duration_ms", "error", "output", "stderr", "delivery"}``. A webhook's secret is read from
the environment variable its ``secret_env`` names when it is sent, and is never recorded.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vmferry.errors import BadInputError
from vmferry.model.hook import (
    Hook,
    HookAttempt,
    HookKind,
    HookOutcome,
    HookPhase,
    HookResult,
    HookSpecError,
    hooks_of_phase,
    make_hook,
    merge_hooks,
    phase_outcome,
    shown_target,
)
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import JobStatus
from vmferry.store import hooks as hooks_store
from vmferry.store.db import Store
from vmferry.verify.witness import Witness, Witnesses, WitnessReport

if TYPE_CHECKING:  # httpx is loaded only when a hook runs: `vmferry migrate` starts without it
    import httpx

__all__ = [
    "PostHookWitness",
    "add_hook",
    "after_failure",
    "before_move",
    "hooks_for",
    "job_document",
    "list_hooks",
    "remove_hook",
    "run_hooks",
    "run_phase",
    "with_post_hooks",
]

# What an exec hook's environment holds of vmferry's own (never a webhook's secret).
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# -- declaring ------------------------------------------------------------------------------


def add_hook(
    store: Store, vm: str, name: str, phase: str, *, url: str | None = None,
    exec_path: str | None = None, timeout_s: float = 10.0, retries: int | None = None,
    required: bool = False, secret_env: str | None = None,
) -> Hook:  # fmt: skip
    """Declare a hook for ``vm``; everything is checked before anything is written."""
    if not vm or len(vm) > 255 or any(c.isspace() for c in vm):
        raise BadInputError(f"VM name {vm!r} must be 1-255 characters without spaces")
    try:
        hook = make_hook(name, phase, url=url, exec_path=exec_path, timeout_s=timeout_s,
                         retries=retries, required=required, secret_env=secret_env)  # fmt: skip
    except HookSpecError as exc:
        raise BadInputError(str(exc)) from exc
    return hooks_store.add_hook(store, vm, hook)


def list_hooks(store: Store, vm: str | None = None) -> dict[str, tuple[Hook, ...]]:
    """Every VM's hooks by VM name, or ``vm``'s alone (an empty tuple when it has none)."""
    if vm is not None:
        return {vm: hooks_store.vm_hooks(store, vm)}
    return hooks_store.all_hooks(store)


def remove_hook(store: Store, vm: str, name: str) -> None:
    hooks_store.remove_hook(store, vm, name)


def hooks_for(store: Store, vm: str, plan_hooks: Sequence[Hook] = ()) -> tuple[Hook, ...]:
    """The hooks of ``vm``'s move: ``plan_hooks`` (a plan's, then its VM entry's, see
    :func:`vmferry.plan.schema.plan_hooks`) and the VM's own; the VM's replaces a plan's of
    the same name."""
    return merge_hooks(plan_hooks, hooks_store.vm_hooks(store, vm))


# -- running --------------------------------------------------------------------------------


def job_document(store: Store, job_id: str) -> dict[str, Any]:
    """The job's JSON as hooks get it: as `vmferry job show --json` prints it."""
    found: dict[str, Any] = to_jsonable(store.get_job(job_id))
    return found


def run_hooks(
    store: Store,
    job_id: str,
    phase: HookPhase,
    hooks: Sequence[Hook],
    job_json: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    backoff_base_s: float = 0.5,
    transport: httpx.BaseTransport | None = None,
) -> HookOutcome:
    """Run ``phase``'s hooks among ``hooks`` for job ``job_id`` with ``job_json`` as their
    body, record each attempt as a ``hook`` event, and say what they mean for the move.
    ``environ``: where secrets and an exec hook's environment come from (os.environ)."""
    environ = os.environ if environ is None else environ
    selected = hooks_of_phase(hooks, phase)
    body = json.dumps(job_json, separators=(",", ":"), sort_keys=True).encode()
    results: list[HookResult] = []
    for i, hook in enumerate(selected):
        result = _run_one(store, job_id, hook, body, job_json, environ, backoff_base_s,
                          transport)  # fmt: skip
        results.append(result)
        if phase is HookPhase.PRE_MIGRATE and not result.ok:
            for skipped in selected[i + 1 :]:
                _record_skipped(store, job_id, skipped, hook)
            break
    return phase_outcome(phase, results)


def run_phase(store: Store, job_id: str, phase: HookPhase, hooks: Sequence[Hook]) -> HookOutcome:
    """:func:`run_hooks` with the job's JSON as the store has it now."""
    if not hooks_of_phase(hooks, phase):
        return phase_outcome(phase, [])
    return run_hooks(store, job_id, phase, hooks, job_document(store, job_id))


def before_move(store: Store, job_id: str, hooks: Sequence[Hook]) -> str | None:
    """Run the pre-migrate hooks; the reason the move is blocked, or None when it may go
    ahead."""
    return run_phase(store, job_id, HookPhase.PRE_MIGRATE, hooks).reason


def after_failure(store: Store, job_id: str, hooks: Sequence[Hook]) -> HookOutcome | None:
    """Run the on-failure hooks when job ``job_id`` ended other than completed (call it
    once the job is finished); None when they did not run."""
    if not hooks_of_phase(hooks, HookPhase.ON_FAILURE):
        return None
    job = store.get_job(job_id)
    if not job.status.finished or job.status is JobStatus.COMPLETED:
        return None
    return run_hooks(store, job_id, HookPhase.ON_FAILURE, hooks, to_jsonable(job))


class PostHookWitness:
    """The post-migrate hooks as a witness of the move: they run when the move put the VM
    on the destination, and a failing ``required`` one is a problem of the verification (the
    job fails); any other failure is a warning."""

    def __init__(self, store: Store, job_id: str, hooks: Sequence[Hook]) -> None:
        self.store, self.job_id = store, job_id
        self.hooks = hooks_of_phase(hooks, HookPhase.POST_MIGRATE)

    def start(self) -> None:
        return None

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        if not moved or not self.hooks:
            return WitnessReport(None, None, None, None)
        outcome = run_phase(self.store, self.job_id, HookPhase.POST_MIGRATE, self.hooks)
        return WitnessReport(None, None, None, None, problems=outcome.problems,
                             warnings=outcome.warnings)  # fmt: skip


def with_post_hooks(witness: Witness, store: Store, job_id: str, hooks: Sequence[Hook]) -> Witness:
    """``witness``, and the post-migrate hooks after it when there are any."""
    if not hooks_of_phase(hooks, HookPhase.POST_MIGRATE):
        return witness
    return Witnesses([witness, PostHookWitness(store, job_id, hooks)])


# -- internals ------------------------------------------------------------------------------


def _run_one(
    store: Store, job_id: str, hook: Hook, body: bytes, job_json: Mapping[str, Any],
    environ: Mapping[str, str], backoff_base_s: float, transport: httpx.BaseTransport | None,
) -> HookResult:  # fmt: skip
    from vmferry.drivers.hooks import deliver_webhook, run_executable  # loads httpx

    record: Callable[[HookAttempt], None] = lambda a: _record(store, job_id, hook, a)  # noqa: E731
    if hook.kind is HookKind.WEBHOOK:
        delivery = uuid.uuid4().hex
        secret = environ.get(hook.secret_env or "", "")
        if not secret:
            last = HookAttempt(hook.name, hook.phase, hook.kind, 1, ok=False, duration_ms=0,
                               error=f"not sent: the environment variable {hook.secret_env} "
                               "(its secret) is not set for this vmferry process",
                               delivery=delivery)  # fmt: skip
            record(last)
        else:
            last = deliver_webhook(hook, body, secret.encode(), delivery, record,
                                   backoff_base_s=backoff_base_s, transport=transport)  # fmt: skip
    else:
        last = run_executable(hook, body, _exec_env(environ, hook, job_json), record)
    return HookResult(hook, last.ok, last.attempt, _summary(last))


def _exec_env(
    environ: Mapping[str, str], hook: Hook, job_json: Mapping[str, Any]
) -> dict[str, str]:
    env = {k: environ[k] for k in _PASSED_ENV if k in environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env["VMFERRY_HOOK_NAME"], env["VMFERRY_HOOK_PHASE"] = hook.name, hook.phase.value
    env["VMFERRY_JOB_ID"] = str(job_json.get("id", ""))
    env["VMFERRY_VM"] = str(job_json.get("vm", ""))
    return env


def _summary(attempt: HookAttempt) -> str:
    tries = f" after {attempt.attempt} attempts" if attempt.attempt > 1 else ""
    if attempt.ok:
        how = f"HTTP {attempt.status_code}" if attempt.kind is HookKind.WEBHOOK else "exit 0"
        return f"ok ({how}){tries}"
    return f"{attempt.error}{tries}"


def _record(store: Store, job_id: str, hook: Hook, attempt: HookAttempt) -> None:
    if attempt.ok:
        result, said = "ok", _summary(replace(attempt, attempt=1))
    elif attempt.will_retry:
        result, said = "retrying", f"{attempt.error}; trying again (attempt {attempt.attempt} " \
                                   f"of {hook.retries + 1})"  # fmt: skip
    else:
        result, said = "failed", attempt.error or "failed"
    message = f"{hook.phase} hook {hook.name} ({hook.kind}): {said} in {attempt.duration_ms} ms"
    store.add_event(job_id, "hook", message, {
        "hook": hook.name, "phase": hook.phase.value, "kind": hook.kind.value,
        "target": shown_target(hook), "attempt": attempt.attempt, "result": result,
        "status_code": attempt.status_code, "exit_code": attempt.exit_code,
        "duration_ms": attempt.duration_ms, "error": attempt.error, "output": attempt.output,
        "stderr": attempt.stderr, "delivery": attempt.delivery,
    })  # fmt: skip


def _record_skipped(store: Store, job_id: str, hook: Hook, failed: Hook) -> None:
    store.add_event(job_id, "hook", f"{hook.phase} hook {hook.name} ({hook.kind}): not run: "
                    f"hook {failed.name} failed before it", {
                        "hook": hook.name, "phase": hook.phase.value, "kind": hook.kind.value,
                        "target": shown_target(hook), "attempt": 0, "result": "skipped",
                        "status_code": None, "exit_code": None, "duration_ms": 0,
                        "error": None, "output": "", "stderr": "", "delivery": None,
                    })  # fmt: skip
