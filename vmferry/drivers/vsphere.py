"""vSphere through pyvmomi: connect with the certificate check a source asks for, read its
VMs in one PropertyCollector call, log out whatever happens. The only module that imports
pyvmomi; it returns the plain ``Raw*`` types of :mod:`vmferry.model.vsphere`
and raises :mod:`vmferry.errors`, one line each (exit 2).

Every connection passes an explicit SSL context: without one pyvmomi skips the certificate
check for localhost and 127.0.0.1, so a missing ``--ca`` would go unnoticed there.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from vmferry.errors import BadInputError, HostUnreachableError, NotFoundError, ToolError
from vmferry.model.vsphere import (
    RawAllocation,
    RawDisk,
    RawNic,
    RawPerf,
    RawVm,
    VsphereSource,
)

__all__ = [
    "VM_PROPERTIES",
    "Snapshot",
    "SnapshotDisk",
    "VsphereSession",
    "VsphereVmHandle",
    "ssl_context",
    "vsphere_session",
]

# What the inventory reads of each VM (paths as vSphere names them; RawVm.properties).
VM_PROPERTIES = (
    "name",
    "config.uuid",
    "config.guestId",
    "config.guestFullName",
    "config.firmware",
    "config.changeTrackingEnabled",
    "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket",
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
    "guest.net",
    "guest.ipStack",
    "summary.storage.committed",
)
CONNECT_TIMEOUT_S = 30
REALTIME_S = 20  # vCenter's realtime statistics: one sample every 20 s, kept about an hour


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
        self._instance = instance
        self._content = instance.RetrieveContent()
        self._counters: dict[str, int] | None = None  # see _counter_ids

    @property
    def session_cookie(self) -> str:
        """The ``vmware_soap_session=...`` cookie of this login, for the datastore's
        ``/folder`` URLs (vCenter accepts the SOAP session there)."""
        raw = str(self._instance._stub.cookie or "")
        for part in raw.split(";"):
            key, _, value = part.strip().partition("=")
            if key == "vmware_soap_session":
                return f"vmware_soap_session={value}"
        raise HostUnreachableError(f"vSphere at {self._source.host} gave no session cookie")

    def find_vm(self, name: str) -> VsphereVmHandle:
        """The VM called ``name`` (in the source's datacenter, when it names one);
        :class:`NotFoundError` naming the source when there is none."""
        objects = self._objects()
        for obj, props in objects:
            if isinstance(obj, vim.VirtualMachine) and props.get("name") == name:
                raw = _raw_vm(props)
                return VsphereVmHandle(obj, raw, _networks(objects), _datacenter_of(obj))
        source = self._source.name
        raise NotFoundError(f"vSphere source {source} has no VM named {name!r} "
                            f"(`vmferry inventory --source {source}` lists them)")  # fmt: skip

    def _objects(self) -> list[tuple[Any, dict[str, Any]]]:
        name = self._source.datacenter
        root = self.datacenter(name) if name else self._content.rootFolder
        view = self._content.viewManager.CreateContainerView(
            root, [vim.VirtualMachine, vim.Network], True
        )
        try:
            objects = _retrieve(self._content.propertyCollector, view)
        finally:
            view.Destroy()
        return [(obj.obj, {prop.name: prop.val for prop in obj.propSet}) for obj in objects]

    def datacenter(self, name: str) -> Any:
        """The datacenter ``name``; :class:`NotFoundError` listing those there are."""
        found = self._content.searchIndex.FindByInventoryPath(name)
        if isinstance(found, vim.Datacenter):
            return found
        known = sorted(dc.name for dc in self._content.rootFolder.childEntity
                       if isinstance(dc, vim.Datacenter))  # fmt: skip
        raise NotFoundError(f"vSphere at {self._source.host} has no datacenter {name!r} "
                            f"(it has: {', '.join(known) or 'none'})")  # fmt: skip

    def performance(self, vm: VsphereVmHandle, counters: Sequence[str],
                    since_s: float) -> RawPerf:  # fmt: skip
        """The VM's realtime statistics (20 s samples; vCenter keeps about an hour) of the
        last ``since_s`` seconds for ``counters`` (``group.name.rollup``), in one
        ``QueryPerf`` call; a counter vCenter does not know is left out."""
        manager = self._content.perfManager
        known = self._counter_ids()
        wanted = {known[name]: name for name in counters if name in known}
        if not wanted:
            return RawPerf(REALTIME_S, (), {})
        spec = vim.PerformanceManager.QuerySpec(
            entity=vm._vm, intervalId=REALTIME_S,
            startTime=datetime.now(UTC) - timedelta(seconds=since_s),
            metricId=[vim.PerformanceManager.MetricId(counterId=key, instance="")
                      for key in wanted],
        )  # fmt: skip
        try:
            answer = manager.QueryPerf(querySpec=[spec])
        except vmodl.MethodFault as exc:
            raise ToolError(f"vSphere gave no statistics of {vm.name}: "
                            f"{_fault_message(exc)}") from exc  # fmt: skip
        return _raw_perf(answer, wanted)

    def _counter_ids(self) -> dict[str, int]:
        """vCenter's performance counters, ``group.name.rollup`` to key, read once per
        session (hundreds of them; the same for every VM)."""
        if self._counters is None:
            self._counters = {
                f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}": int(c.key)
                for c in self._content.perfManager.perfCounter or ()
            }
        return self._counters

    def read_inventory(self) -> tuple[list[RawVm], dict[str, str]]:
        """Every VM of the source (of its datacenter, when it names one) and the names of
        the networks and port groups there (by object id and by port group key), from one
        PropertyCollector call over a container view (plus its pages, if any)."""
        objects = self._objects()
        raws = [_raw_vm(props) for obj, props in objects if isinstance(obj, vim.VirtualMachine)]
        return raws, _networks(objects)


@dataclass(frozen=True)
class SnapshotDisk:
    """A disk as a snapshot shows it: its change id (empty without changed block tracking)
    and its chain's base file (``backing.parent`` followed to the end)."""

    change_id: str
    base_file: str


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of a VM: its managed object, its name and its disks by device key."""

    ref: Any
    name: str
    disks: dict[int, SnapshotDisk]


class VsphereVmHandle:
    """One VM of a session: what was read of it (``raw``, the ``networks`` by id and key,
    its ``datacenter``'s name) and its power operations, each waited for."""

    def __init__(self, vm: Any, raw: RawVm, networks: dict[str, str], datacenter: str) -> None:
        self._vm = vm
        self.raw = raw
        self.networks = networks
        self.datacenter = datacenter
        self.name = str(raw.properties.get("name"))

    def power_state(self) -> str:
        """``runtime.powerState`` now: poweredOn, poweredOff or suspended."""
        return str(self._vm.runtime.powerState)

    def tools_state(self) -> str | None:
        """``guest.toolsRunningStatus`` now (guestToolsRunning, guestToolsNotRunning, ...)."""
        guest = self._vm.guest
        status = getattr(guest, "toolsRunningStatus", None) if guest is not None else None
        return str(status) if status else None

    def shutdown_guest(self, timeout_s: float, poll_s: float = 0.5) -> None:
        """Ask VMware Tools to shut the guest down (``ShutdownGuest``) and wait until the VM
        is powered off; :class:`ToolError` when it is not within ``timeout_s``."""
        try:
            self._vm.ShutdownGuest()
        except vmodl.MethodFault as exc:
            raise ToolError(f"vSphere refused to shut down {self.name} through VMware Tools: "
                            f"{_fault_message(exc)}") from exc  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while self.power_state() != "poweredOff":
            if time.monotonic() > deadline:
                raise ToolError(f"{self.name} was still {self.power_state()} {timeout_s:g} s "
                                "after its guest was asked to shut down: see its console, or "
                                "retry with --force to power it off")  # fmt: skip
            time.sleep(poll_s)

    def power_off(self, timeout_s: float) -> None:
        """``PowerOffVM_Task`` (no guest involved), waited for."""
        self._task(self._vm.PowerOffVM_Task(), "power off", timeout_s)

    def power_on(self, timeout_s: float) -> None:
        """``PowerOnVM_Task``, waited for."""
        self._task(self._vm.PowerOnVM_Task(), "power on", timeout_s)

    # -- changed block tracking and snapshots (a warm import) --------------------------

    def change_tracking(self) -> bool:
        """``config.changeTrackingEnabled`` now."""
        return bool(self._vm.config.changeTrackingEnabled)

    def enable_change_tracking(self, timeout_s: float) -> None:
        """``ReconfigVM_Task`` with ``changeTrackingEnabled``, waited for (vSphere starts
        tracking at the VM's next snapshot or power cycle: the warm import snapshots next)."""
        spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
        self._task(self._vm.ReconfigVM_Task(spec), "enable changed block tracking on",
                   timeout_s)  # fmt: skip

    def create_snapshot(self, name: str, description: str, timeout_s: float) -> Snapshot:
        """A snapshot without memory and without quiescing (``CreateSnapshot_Task``),
        waited for, with each disk's change id and base file as the snapshot shows them."""
        task = self._vm.CreateSnapshot_Task(name=name, description=description, memory=False,
                                            quiesce=False)  # fmt: skip
        ref = self._task(task, f"snapshot ({name})", timeout_s)
        disks = {}
        for device in ref.config.hardware.device or ():
            if isinstance(device, vim.vm.device.VirtualDisk):
                backing: Any = device.backing
                root = backing
                while getattr(root, "parent", None) is not None:
                    root = root.parent
                disks[int(device.key)] = SnapshotDisk(
                    change_id=str(getattr(backing, "changeId", None) or ""),
                    base_file=str(getattr(root, "fileName", "") or ""),
                )
        return Snapshot(ref, name, disks)

    def remove_snapshot(self, snapshot: Snapshot, timeout_s: float) -> None:
        """``RemoveSnapshot_Task`` (its changes consolidated into its parent), waited for."""
        task = snapshot.ref.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
        self._task(task, f"remove snapshot {snapshot.name} of", timeout_s)

    def snapshots_named(self, prefix: str) -> list[Snapshot]:
        """The VM's snapshots whose names start with ``prefix`` (their disks not read)."""
        found: list[Snapshot] = []
        info = self._vm.snapshot
        pending = list(info.rootSnapshotList or ()) if info is not None else []
        while pending:
            tree = pending.pop()
            if str(tree.name).startswith(prefix):
                found.append(Snapshot(tree.snapshot, str(tree.name), {}))
            pending.extend(tree.childSnapshotList or ())
        return found

    def changed_areas(
        self, snapshot: Snapshot, disk_key: int, change_id: str, capacity: int
    ) -> list[tuple[int, int]]:
        """(start, length) of what changed on disk ``disk_key`` between ``change_id`` (``*``:
        every area that holds data) and ``snapshot`` (``QueryChangedDiskAreas``, asked again
        from where each answer ends until the disk's end)."""
        areas: list[tuple[int, int]] = []
        offset = 0
        while offset < capacity:
            try:
                info = self._vm.QueryChangedDiskAreas(
                    snapshot=snapshot.ref, deviceKey=disk_key, startOffset=offset,
                    changeId=change_id,
                )  # fmt: skip
            except vmodl.MethodFault as exc:
                raise ToolError(f"vSphere did not say what changed on disk {disk_key} of "
                                f"{self.name}: {_fault_message(exc)}") from exc  # fmt: skip
            areas.extend((int(a.start), int(a.length)) for a in info.changedArea or ())
            end = int(info.startOffset) + int(info.length)
            if end <= offset:
                raise ToolError(f"vSphere's changed areas of disk {disk_key} of {self.name} "
                                f"do not advance past {offset}")  # fmt: skip
            offset = end
        return areas

    def _task(self, task: Any, what: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while task.info.state not in ("success", "error"):
            if time.monotonic() > deadline:
                raise ToolError(f"vSphere did not {what} {self.name} within {timeout_s:g} s")
            time.sleep(0.2)
        if task.info.state == "error":
            raise ToolError(f"vSphere could not {what} {self.name}: "
                            f"{_fault_message(task.info.error)}")  # fmt: skip
        return task.info.result


def _raw_perf(answer: Any, wanted: dict[int, str]) -> RawPerf:
    """``QueryPerf``'s answer for one entity as plain values (oldest first)."""
    if not answer:
        return RawPerf(REALTIME_S, (), {})
    metric = answer[0]
    info = list(metric.sampleInfo or ())
    order = sorted(range(len(info)), key=lambda i: info[i].timestamp)
    taken = tuple(info[i].timestamp.astimezone(UTC).isoformat(timespec="seconds")
                  .replace("+00:00", "Z") for i in order)  # fmt: skip
    interval = int(info[0].interval) if info else REALTIME_S
    series: dict[str, tuple[int | None, ...]] = {}
    for values in metric.value or ():
        name = wanted.get(int(values.id.counterId))
        if name is None or (values.id.instance or "") != "":
            continue
        raw = list(values.value or ())
        series[name] = tuple(
            None if i >= len(raw) or int(raw[i]) < 0 else int(raw[i]) for i in order
        )
    return RawPerf(interval, taken, series)


def _networks(objects: list[tuple[Any, dict[str, Any]]]) -> dict[str, str]:
    """Network names by managed object id, and port group names by key."""
    networks: dict[str, str] = {}
    for obj, props in objects:
        if isinstance(obj, vim.Network) and "name" in props:
            networks[obj._moId] = str(props["name"])
            if "key" in props:
                networks[str(props["key"])] = str(props["name"])
    return networks


def _datacenter_of(entity: Any) -> str:
    """The name of the datacenter ``entity`` is in (the datastore URL's ``dcPath``)."""
    parent = entity.parent
    while parent is not None and not isinstance(parent, vim.Datacenter):
        parent = parent.parent
    if parent is None:
        raise NotFoundError(f"vSphere shows no datacenter above {entity.name}")
    return str(parent.name)


@contextmanager
def vsphere_session(source: VsphereSource, password: str,
                    keepalive_s: float | None = None) -> Iterator[VsphereSession]:  # fmt: skip
    """Log in to ``source`` with ``password``; always log out. One-line errors: the user
    refused, a certificate not trusted (naming --ca and --insecure), no answer.

    ``keepalive_s``: a thread asks vSphere the time that often while the session is open,
    so that a long import (a warm one's hour between copies, a live one's stream of a big
    disk) does not lose its session to vCenter's idle timeout (30 minutes by default); the
    datastore reads use the same session's cookie."""
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
    ended = threading.Event()
    if keepalive_s is not None:
        threading.Thread(target=_keep_alive, args=(instance, keepalive_s, ended),
                         name="vmferry-vsphere-keepalive", daemon=True).start()  # fmt: skip
    try:
        yield VsphereSession(source, instance)
    finally:
        ended.set()
        with suppress(OSError, vmodl.MethodFault):  # the connection may be gone already
            Disconnect(instance)


def _keep_alive(instance: Any, every_s: float, ended: threading.Event) -> None:
    """``CurrentTime`` every ``every_s`` until ``ended``; a failure is left to the import's
    own next call to report."""
    while not ended.wait(every_s):
        with suppress(Exception):
            instance.CurrentTime()


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
    props["guest.net"] = tuple(_guest_nic(nic) for nic in props.get("guest.net") or ()
                               if getattr(nic, "macAddress", None))  # fmt: skip
    props["guest.ipStack"] = _guest_stack(props.get("guest.ipStack") or ())
    if props.get("config.latencySensitivity") is not None:
        props["config.latencySensitivity"] = str(props["config.latencySensitivity"].level)
    devices = props.pop("config.hardware.device", None) or []
    controllers: dict[Any, Any] = {
        d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualController)
    }
    disks = [_raw_disk(d, controllers.get(d.controllerKey)) for d in devices
             if isinstance(d, vim.vm.device.VirtualDisk)]  # fmt: skip
    nics = [_raw_nic(d) for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    return RawVm(props, disks, nics)


def _guest_nic(nic: Any) -> tuple[str, tuple[str, ...]]:
    """A NIC as VMware Tools see it: its MAC and its addresses as ``IP/PREFIX`` (from
    ``ipConfig``; the bare ``ipAddress`` list, without prefixes, when there is none)."""
    config = getattr(nic, "ipConfig", None)
    found = [f"{a.ipAddress}/{a.prefixLength}" for a in getattr(config, "ipAddress", None) or ()]
    if not found:
        found = [str(a) for a in nic.ipAddress or ()]
    return str(nic.macAddress).lower(), tuple(found)


def _guest_stack(stacks: Any) -> tuple[str | None, tuple[str, ...]]:
    """The default route's gateway and the DNS servers VMware Tools report."""
    gateway: str | None = None
    dns: list[str] = []
    for stack in stacks:
        routes = getattr(getattr(stack, "ipRouteConfig", None), "ipRoute", None) or ()
        for route in routes:
            if route.prefixLength == 0 and route.gateway and route.gateway.ipAddress:
                gateway = gateway or str(route.gateway.ipAddress)
        dns += [str(a) for a in getattr(getattr(stack, "dnsConfig", None), "ipAddress", None) or ()]
    return gateway, tuple(dict.fromkeys(dns))


def _raw_allocation(allocation: Any) -> RawAllocation:
    shares = allocation.shares
    return RawAllocation(
        reservation=allocation.reservation,
        limit=allocation.limit,
        shares_level=str(shares.level) if shares is not None else None,
        shares=shares.shares if shares is not None else None,
    )


_BACKINGS = (
    (vim.vm.device.VirtualDisk.FlatVer2BackingInfo, "flat"),
    (vim.vm.device.VirtualDisk.SparseVer2BackingInfo, "sparse"),
    (vim.vm.device.VirtualDisk.SeSparseBackingInfo, "sparse"),
    (vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo, "rdm"),
)
_CONTROLLERS = (
    (vim.vm.device.ParaVirtualSCSIController, "pvscsi"),
    (vim.vm.device.VirtualLsiLogicSASController, "lsisas1068"),
    (vim.vm.device.VirtualLsiLogicController, "lsilogic"),
    (vim.vm.device.VirtualBusLogicController, "buslogic"),
    (vim.vm.device.VirtualAHCIController, "sata"),
    (vim.vm.device.VirtualIDEController, "ide"),
    (vim.vm.device.VirtualNVMEController, "nvme"),
)
_NICS = (
    (vim.vm.device.VirtualVmxnet3, "vmxnet3"),
    (vim.vm.device.VirtualVmxnet2, "vmxnet2"),
    (vim.vm.device.VirtualE1000e, "e1000e"),
    (vim.vm.device.VirtualE1000, "e1000"),
    (vim.vm.device.VirtualPCNet32, "vlance"),
)


def _kind(obj: Any, table: tuple[tuple[type, str], ...], default: str) -> str:
    return next((name for cls, name in table if isinstance(obj, cls)), default)


def _raw_disk(disk: Any, controller: Any) -> RawDisk:
    backing = disk.backing
    return RawDisk(
        str(getattr(backing, "fileName", "") or ""), disk.capacityInBytes, disk.capacityInKB,
        backing=_kind(backing, _BACKINGS, type(backing).__name__),
        disk_mode=str(getattr(backing, "diskMode", None) or "persistent"),
        bus=_kind(controller, _CONTROLLERS, "unknown") if controller is not None else "unknown",
        bus_number=int(getattr(controller, "busNumber", 0) or 0),
        unit=int(disk.unitNumber or 0),
        has_parent=getattr(backing, "parent", None) is not None,
        key=int(disk.key or 0),
    )  # fmt: skip


def _raw_nic(nic: Any) -> RawNic:
    backing = nic.backing
    port = getattr(backing, "port", None)
    network = getattr(backing, "network", None)
    return RawNic(
        mac=nic.macAddress,
        network=network._moId if network is not None else None,
        portgroup_key=getattr(port, "portgroupKey", None),
        device_name=getattr(backing, "deviceName", None),
        model=_kind(nic, _NICS, "unknown"),
        connected=bool(getattr(nic.connectable, "startConnected", True)),
    )


def _fault_message(fault: BaseException) -> str:
    """A vSphere fault's own message (pyvmomi's stubs do not declare ``msg``), else its
    type's name."""
    return str(getattr(fault, "msg", None) or type(fault).__name__)
