"""HA-enabled VMs and hosts' power drivers (`vmferry ha`, `vmferry host power`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vmferry.model.ha import HaPriority, HaVm, HostPower, PowerAutomation
from vmferry.store.db import Store
from vmferry.store.tables import HaVmRow, HostPowerRow

__all__ = ["get_power", "ha_vms", "put_ha_vm", "remove_ha_vm", "remove_power", "set_power"]


def put_ha_vm(store: Store, vm: HaVm) -> None:
    """Record ``vm`` (replacing what was recorded of it)."""
    with Session(store.engine) as session, session.begin():
        row = session.get(HaVmRow, vm.vm) or HaVmRow(vm=vm.vm)
        row.priority, row.host, row.definition_xml = vm.priority.value, vm.host, vm.definition_xml
        row.vcpus, row.memory_bytes, row.state, row.note = (
            vm.vcpus,
            vm.memory_bytes,
            vm.state,
            vm.note,
        )
        row.updated_at = datetime.now(UTC)
        session.add(row)


def remove_ha_vm(store: Store, vm: str) -> bool:
    with Session(store.engine) as session, session.begin():
        gone = session.execute(delete(HaVmRow).where(HaVmRow.vm == vm))
        return bool(gone.rowcount)  # type: ignore[attr-defined]


def ha_vms(store: Store) -> list[HaVm]:
    """Every HA-enabled VM, by name."""
    with Session(store.engine) as session:
        return [_vm(r) for r in session.scalars(select(HaVmRow).order_by(HaVmRow.vm))]


def set_power(store: Store, power: HostPower) -> None:
    with Session(store.engine) as session, session.begin():
        row = session.get(HostPowerRow, power.host) or HostPowerRow(host=power.host)
        row.on_command, row.off_command = power.on_command, power.off_command
        row.status_command, row.timeout_s = power.status_command, power.timeout_s
        row.driver, row.url, row.user = power.driver, power.url, power.user
        row.password_env, row.ca, row.insecure = power.password_env, power.ca, power.insecure
        row.automation = power.automation.value
        session.add(row)


def get_power(store: Store, host: str) -> HostPower | None:
    with Session(store.engine) as session:
        row = session.get(HostPowerRow, host)
        if row is None:
            return None
        return HostPower(row.host, row.on_command, row.off_command, row.status_command,
                         row.timeout_s, row.driver, row.url, row.user, row.password_env,
                         row.ca, row.insecure, PowerAutomation(row.automation))  # fmt: skip


def remove_power(store: Store, host: str) -> bool:
    with Session(store.engine) as session, session.begin():
        gone = session.execute(delete(HostPowerRow).where(HostPowerRow.host == host))
        return bool(gone.rowcount)  # type: ignore[attr-defined]


def _vm(row: HaVmRow) -> HaVm:
    at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return HaVm(row.vm, HaPriority(row.priority), row.host, row.definition_xml, row.vcpus,
                row.memory_bytes, row.state, row.note,
                at.isoformat(timespec="seconds").replace("+00:00", "Z"))  # fmt: skip
