"""vSphere through pyvmomi: connect with the certificate check a source asks for, read its
VMs in one PropertyCollector call, log out whatever happens. The only module that imports
pyvmomi; it returns the plain ``Raw*`` types of :mod:`vmferry.model.vsphere`
and raises :mod:`vmferry.errors`, one line each (exit 2).

Every connection passes an explicit SSL context: without one pyvmomi skips the certificate
check for localhost and 127.0.0.1, so a missing ``--ca`` would go unnoticed there.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from vmferry.errors import BadInputError, HostUnreachableError, NotFoundError
from vmferry.model.vsphere import RawAllocation, RawDisk, RawNic, RawVm, VsphereSource

__all__ = ["VM_PROPERTIES", "VsphereSession", "ssl_context", "vsphere_session"]

# What the inventory reads of each VM (paths as vSphere names them; RawVm.properties).
VM_PROPERTIES = (
    "name",
    "config.uuid",
    "config.guestId",
    "config.guestFullName",
    "config.firmware",
    "config.changeTrackingEnabled",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "runtime.powerState",
    "guest.toolsRunningStatus",
    "config.cpuAffinity",
    "config.memoryAffinity",
    "config.cpuAllocation",
    "config.memoryAllocation",
    "config.memoryReservationLockedToMax",
    "config.latencySensitivity",
    "config.cpuHotAddEnabled",
    "config.memoryHotAddEnabled",
)
CONNECT_TIMEOUT_S = 30


def ssl_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The context to connect with: trusting ``ca_file`` alone, checking nothing when
    ``insecure``, else the system's CAs."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:  # missing, unreadable, or not a PEM certificate
        raise BadInputError(f"cannot use --ca {ca_file}: {exc}", cause=exc) from exc


class VsphereSession:
    """A logged-in connection to a vCenter or ESXi (see :func:`vsphere_session`)."""

    def __init__(self, source: VsphereSource, instance: Any) -> None:
        self._source = source
        self._content = instance.RetrieveContent()

    def datacenter(self, name: str) -> Any:
        """The datacenter ``name``; :class:`NotFoundError` listing those there are."""
        found = self._content.searchIndex.FindByInventoryPath(name)
        if isinstance(found, vim.Datacenter):
            return found
        known = sorted(dc.name for dc in self._content.rootFolder.childEntity
                       if isinstance(dc, vim.Datacenter))  # fmt: skip
        raise NotFoundError(f"vSphere at {self._source.host} has no datacenter {name!r} "
                            f"(it has: {', '.join(known) or 'none'})")  # fmt: skip

    def read_inventory(self) -> tuple[list[RawVm], dict[str, str]]:
        """Every VM of the source (of its datacenter, when it names one) and the names of
        the networks and port groups there (by object id and by port group key), from one
        PropertyCollector call over a container view (plus its pages, if any)."""
        name = self._source.datacenter
        root = self.datacenter(name) if name else self._content.rootFolder
        view = self._content.viewManager.CreateContainerView(
            root, [vim.VirtualMachine, vim.Network], True
        )
        try:
            objects = _retrieve(self._content.propertyCollector, view)
        finally:
            view.Destroy()
        raws: list[RawVm] = []
        networks: dict[str, str] = {}
        for obj in objects:
            props = {prop.name: prop.val for prop in obj.propSet}
            if isinstance(obj.obj, vim.VirtualMachine):
                raws.append(_raw_vm(props))
            elif isinstance(obj.obj, vim.Network) and "name" in props:
                networks[obj.obj._moId] = str(props["name"])
                if "key" in props:
                    networks[str(props["key"])] = str(props["name"])
        return raws, networks


@contextmanager
def vsphere_session(source: VsphereSource, password: str) -> Iterator[VsphereSession]:
    """Log in to ``source`` with ``password``; always log out. One-line errors: the user
    refused, a certificate not trusted (naming --ca and --insecure), no answer."""
    where = f"{source.host}:{source.port}"
    context = ssl_context(source.ca_file, source.insecure)
    try:
        instance = SmartConnect(host=source.host, port=source.port, user=source.user,
                                pwd=password, sslContext=context,
                                httpConnectionTimeout=CONNECT_TIMEOUT_S)  # fmt: skip
    except vim.fault.InvalidLogin as exc:
        raise BadInputError(f"vSphere at {source.host} refused the user {source.user}: "
                            f"{_fault_message(exc)}", cause=exc) from exc  # fmt: skip
    except ssl.SSLCertVerificationError as exc:
        raise BadInputError(
            f"vSphere at {where} has a certificate this machine does not trust "
            f"({exc.verify_message}): give its CA with --ca FILE, or --insecure to skip "
            "the check", cause=exc) from exc  # fmt: skip
    except ssl.SSLError as exc:
        raise BadInputError(f"TLS with vSphere at {where} failed: {exc}", cause=exc) from exc
    except OSError as exc:  # refused, unknown name, timed out
        raise HostUnreachableError(f"vSphere at {where} did not answer: {exc}",
                                   cause=exc) from exc  # fmt: skip
    except vmodl.MethodFault as exc:
        raise BadInputError(f"vSphere at {where} refused the login: {_fault_message(exc)}",
                            cause=exc) from exc  # fmt: skip
    except Exception as exc:  # pyvmomi's own: "HOST:PORT is down or is not a VIM server"
        if "not a VIM server" not in str(exc):
            raise
        raise HostUnreachableError(f"{where} answered, but not as vSphere (no /sdk API)",
                                   cause=exc) from exc  # fmt: skip
    try:
        yield VsphereSession(source, instance)
    finally:
        with suppress(OSError, vmodl.MethodFault):  # the connection may be gone already
            Disconnect(instance)


def _retrieve(collector: Any, view: Any) -> list[Any]:
    """The VMs' and networks' properties in ``view``, every page of them."""
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
            obj=view, skip=True,
            selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)],
        )],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.VirtualMachine, pathSet=list(VM_PROPERTIES)),
            vmodl.query.PropertyCollector.PropertySpec(type=vim.Network, pathSet=["name"]),
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.dvs.DistributedVirtualPortgroup, pathSet=["name", "key"]),
        ],
    )  # fmt: skip
    options = vmodl.query.PropertyCollector.RetrieveOptions()
    result = collector.RetrievePropertiesEx([spec], options)
    objects: list[Any] = []
    while result is not None:
        objects.extend(result.objects)
        result = collector.ContinueRetrievePropertiesEx(result.token) if result.token else None
    return objects


def _raw_vm(props: dict[str, Any]) -> RawVm:
    """A VM's properties, its devices turned into plain disks and NICs and its placement
    settings into plain values."""
    for path in ("config.cpuAffinity", "config.memoryAffinity"):
        if props.get(path) is not None:
            props[path] = tuple(int(n) for n in props[path].affinitySet or ())
    for path in ("config.cpuAllocation", "config.memoryAllocation"):
        if props.get(path) is not None:
            props[path] = _raw_allocation(props[path])
    if props.get("config.latencySensitivity") is not None:
        props["config.latencySensitivity"] = str(props["config.latencySensitivity"].level)
    devices = props.pop("config.hardware.device", None) or []
    disks = [_raw_disk(d) for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    nics = [_raw_nic(d) for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    return RawVm(props, disks, nics)


def _raw_allocation(allocation: Any) -> RawAllocation:
    shares = allocation.shares
    return RawAllocation(
        reservation=allocation.reservation,
        limit=allocation.limit,
        shares_level=str(shares.level) if shares is not None else None,
        shares=shares.shares if shares is not None else None,
    )


def _raw_disk(disk: Any) -> RawDisk:
    return RawDisk(str(getattr(disk.backing, "fileName", "") or ""),
                   disk.capacityInBytes, disk.capacityInKB)  # fmt: skip


def _raw_nic(nic: Any) -> RawNic:
    backing = nic.backing
    port = getattr(backing, "port", None)
    network = getattr(backing, "network", None)
    return RawNic(
        mac=nic.macAddress,
        network=network._moId if network is not None else None,
        portgroup_key=getattr(port, "portgroupKey", None),
        device_name=getattr(backing, "deviceName", None),
    )


def _fault_message(fault: BaseException) -> str:
    """A vSphere fault's own message (pyvmomi's stubs do not declare ``msg``), else its
    type's name."""
    return str(getattr(fault, "msg", None) or type(fault).__name__)
