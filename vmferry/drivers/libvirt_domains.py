"""What one host says about one domain, for reconciling interrupted jobs; and destroying a
leftover copy.

Works on a :class:`~vmferry.drivers.libvirt_host.LibvirtHost` connection; no libvirt
object leaves this module.
"""

from __future__ import annotations

from typing import Any

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import NotFoundError
from vmferry.model.domain_view import ABSENT, DomainView

__all__ = ["destroy_domain", "domain_view"]

_RUNNING = frozenset({libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED})
_PAUSED = frozenset({libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED})
_POSTCOPY_FAILED = frozenset({
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED),  # the source
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED),  # the destination
})  # fmt: skip


def domain_view(host: LibvirtHost, name: str) -> DomainView:
    """The domain ``name`` as ``host`` reports it now (:data:`ABSENT` if there is none).

    Raises :class:`~vmferry.errors.HostUnreachableError` when the connection fails.
    """
    try:
        dom = host._lookup(name)
    except NotFoundError:
        return ABSENT
    try:
        state, reason = dom.state(0)
        persistent = bool(dom.isPersistent())
        active = bool(dom.isActive())
        job_active = active and _job_active(dom)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return ABSENT  # it went away while we looked (a transient domain stopping)
        raise host._error(exc, f"reading the state of VM {name!r}") from exc
    return DomainView(
        exists=True,
        running=active and int(state) in _RUNNING,
        paused=active and int(state) in _PAUSED,
        persistent=persistent,
        job_active=job_active,
        postcopy_failed=active and (int(state), int(reason)) in _POSTCOPY_FAILED,
    )


def _job_active(dom: Any) -> bool:
    try:
        info = dom.jobInfo()
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if "only on the source host" in (exc.get_error_message() or ""):
            return True  # the incoming side of a migration still under way
        if code == libvirt.VIR_ERR_OPERATION_INVALID:
            return False  # "domain is not running": it stopped between the calls
        if code == libvirt.VIR_ERR_NO_SUPPORT:
            return False  # a driver without jobs (libvirt's test driver) migrates nothing
        raise
    return bool(int(info[0]) != libvirt.VIR_DOMAIN_JOB_NONE)


def destroy_domain(host: LibvirtHost, name: str) -> bool:
    """Power off domain ``name`` on ``host`` at once; its definition (if any) stays.

    Returns False when there was nothing to stop (absent or already shut off), so calling
    it twice is harmless.
    """
    try:
        dom = host._lookup(name)
    except NotFoundError:
        return False
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        if code == libvirt.VIR_ERR_OPERATION_INVALID and not _is_active(dom):
            return False
        raise host._error(exc, f"stopping VM {name!r}") from exc
    return True


def _is_active(dom: Any) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False
