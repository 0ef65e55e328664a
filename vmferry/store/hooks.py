"""The hooks VMs declare (`vmferry hooks add|list|remove`), by VM name. Hooks are checked
by the callers (:func:`vmferry.model.hook.make_hook`) before they reach the store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vmferry.errors import AlreadyExistsError, NotFoundError
from vmferry.model.hook import Hook, HookKind, HookPhase
from vmferry.store.db import Store
from vmferry.store.tables import VmHookRow

__all__ = ["add_hook", "all_hooks", "remove_hook", "vm_hooks"]


def add_hook(store: Store, vm: str, hook: Hook) -> Hook:
    """Declare ``hook`` for ``vm``; :class:`AlreadyExistsError` when the VM has a hook of
    that name."""
    try:
        with Session(store.engine) as session, session.begin():
            if session.get(VmHookRow, (vm, hook.name)) is not None:
                raise _exists(vm, hook.name)
            session.add(VmHookRow(vm=vm, name=hook.name, phase=hook.phase.value,
                                  kind=hook.kind.value, target=hook.target,
                                  timeout_ms=round(hook.timeout_s * 1000), retries=hook.retries,
                                  required=hook.required, secret_env=hook.secret_env,
                                  added_at=datetime.now(UTC)))  # fmt: skip
    except IntegrityError as exc:  # added by someone else between our read and insert
        raise _exists(vm, hook.name, exc) from exc
    return hook


def vm_hooks(store: Store, vm: str) -> tuple[Hook, ...]:
    """``vm``'s hooks, in the order they were added (each phase's run in this order)."""
    with Session(store.engine) as session:
        rows = session.scalars(select(VmHookRow).where(VmHookRow.vm == vm)
                               .order_by(VmHookRow.added_at, VmHookRow.name))  # fmt: skip
        return tuple(_hook(row) for row in rows)


def all_hooks(store: Store) -> dict[str, tuple[Hook, ...]]:
    """Every VM's hooks, by VM name (sorted), each VM's in the order they were added."""
    found: dict[str, list[Hook]] = {}
    with Session(store.engine) as session:
        order = (VmHookRow.vm, VmHookRow.added_at, VmHookRow.name)
        rows = session.scalars(select(VmHookRow).order_by(*order))
        for row in rows:
            found.setdefault(row.vm, []).append(_hook(row))
    return {vm: tuple(hooks) for vm, hooks in found.items()}


def remove_hook(store: Store, vm: str, name: str) -> None:
    """Forget ``vm``'s hook ``name``; :class:`NotFoundError` when it has none of that name."""
    with Session(store.engine) as session, session.begin():
        gone = session.execute(delete(VmHookRow).where(VmHookRow.vm == vm,
                                                       VmHookRow.name == name))  # fmt: skip
        if gone.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError(f"{vm} has no hook named {name!r}; `vmferry hooks list {vm}` "
                                "lists its hooks")  # fmt: skip


def _hook(row: VmHookRow) -> Hook:
    return Hook(name=row.name, phase=HookPhase(row.phase), kind=HookKind(row.kind),
                target=row.target, timeout_s=row.timeout_ms / 1000, retries=row.retries,
                required=row.required, secret_env=row.secret_env)  # fmt: skip


def _exists(vm: str, name: str, cause: BaseException | None = None) -> AlreadyExistsError:
    return AlreadyExistsError(f"{vm} has a hook named {name!r} already; `vmferry hooks remove "
                              f"{vm} {name}` removes it", cause=cause)  # fmt: skip
