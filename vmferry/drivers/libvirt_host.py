"""A thin wrapper around one libvirt connection: the only module that imports libvirt.

Like OpenStack Nova's ``Host``/``Guest`` classes, :class:`LibvirtHost` turns libvirt handles
into vmferry model types (:class:`~vmferry.model.VmRecord`, :class:`~vmferry.model.HostInfo`)
and ``libvirt.libvirtError`` into the :mod:`vmferry.errors` hierarchy, so no libvirt object
leaves this module.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape

import libvirt
import libvirt_qemu
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from vmferry.drivers.domain_xml import parse_domain_xml
from vmferry.drivers.threads import call_in_thread
from vmferry.errors import (
    AlreadyExistsError,
    BadInputError,
    HostUnreachableError,
    NotFoundError,
    VmferryError,
)
from vmferry.model import Disk, HostInfo, VmRecord, VmSpec, VmState

__all__ = ["LibvirtHost", "shared_connections"]

log = logging.getLogger(__name__)

_MiB = 1024 * 1024

_STATES: dict[int, VmState] = {
    libvirt.VIR_DOMAIN_NOSTATE: VmState.NO_STATE,
    libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VmState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: VmState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VmState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: VmState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: VmState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VmState.SUSPENDED,
}

# The destination's copy of a VM in post-copy, running on its pages as they arrive or split
# after the move broke off: libvirt's incoming migration job holds the VM, and reading its
# XML waits 30 s for that lock, then fails (libvirt 11.3.0, seen in the lab). Its name,
# state, vCPUs and memory need no lock.
_LOCKED_FOR_MIGRATION = frozenset({
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED),
})  # fmt: skip

_NOT_FOUND_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_NETWORK,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_STORAGE_VOL,
    }
)
_BAD_INPUT_CODES = frozenset(
    {
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_XML_DETAIL,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_OPERATION_INVALID,
    }
)
_CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)

# Undefine flag sets, most thorough first; drivers refuse flags they do not know.
_UNDEFINE_COMMON = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)

_CHECK_HINT = (
    "check that the host is up and reachable from here, that libvirt listens at that URI "
    "(for qemu+tls: libvirtd --listen with listen_tls on port 16514; for qemu+tcp: "
    "libvirtd --listen on port 16509; for qemu+ssh: ssh access and libvirt-clients on "
    "the host), that no firewall drops the "
    "connection, and that the URI is right (`vmferry hosts list`)"
)


_TLS_MISSING = re.compile(
    r"[Cc]annot (?:access|read) (CA certificate|certificate|private key) '([^']+)'"
)
_TLS_UNTRUSTED = ("known issuer", "not trusted", "failed validation", "verify peer's certificate")
_TLS_NAME = re.compile(r"owner does not match the hostname (\S+)")


def client_ca_file(uri: str, *, root: bool = True) -> str:
    """Pure: the CA file a libvirt client checks a TLS host against: the URI's ``pkipath``
    directory's, else libvirt's default for root or for a user."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    if query.get("pkipath"):
        return str(Path(query["pkipath"][0]) / "cacert.pem")
    return "/etc/pki/CA/cacert.pem" if root else "~/.pki/libvirt/cacert.pem"


def tls_remedy(message: str, uri: str) -> str | None:
    """Pure: for a libvirt error about TLS files or certificates, what to fix (the file it
    names and the step), or None for any other error."""
    missing = _TLS_MISSING.search(message)
    if missing:
        what, path = missing.groups()
        return (f"the {what} file {path} is missing: put it there (for a client: cacert.pem, "
                "clientcert.pem and clientkey.pem in /etc/pki/CA and /etc/pki/libvirt, or in "
                "the directory the URI's ?pkipath= names; see docs/hosts.md)")  # fmt: skip
    name = _TLS_NAME.search(message)
    if name:
        return (f"the host's certificate does not name {name.group(1)}: connect with a name "
                "or address its certificate lists, or reissue it with that one in its "
                "subjectAltName (docs/hosts.md)")  # fmt: skip
    if any(marker in message for marker in _TLS_UNTRUSTED):
        ca_file = client_ca_file(uri, root=os.geteuid() == 0)
        return (f"the host's certificate and this client's do not chain to the CA in {ca_file}: "
                "that file must hold the CA that signed the host's server certificate, and "
                "the host's ca_file the one that signed this client's (docs/hosts.md)")  # fmt: skip
    return None


@functools.cache
def _silence_libvirt() -> None:
    """Stop libvirt from printing every error to stderr; we raise them instead."""

    def ignore(_ctx: object, _err: object) -> None:
        return None

    libvirt.registerErrorHandler(ignore, None)


def _message(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc).strip()


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        log.debug("closing a libvirt connection failed", exc_info=True)


def _close_late_connection(future: Future[Any]) -> None:
    """Close a connection that arrived after connect() gave up waiting for it."""
    if not future.cancelled() and future.exception() is None:
        _close_quietly(future.result())


def _open(uri: str, timeout_s: float) -> Any:
    """``libvirt.open(uri)`` that gives up after ``timeout_s``.

    libvirt.open blocks in C for as long as TCP or SSH keep trying, so it runs in a daemon
    thread: if the host never answers, the thread is abandoned (it cannot be interrupted)
    and closes its connection should one ever arrive.
    """
    _, future = call_in_thread(lambda: libvirt.open(uri), f"libvirt-open {uri}")
    try:
        conn = future.result(timeout=timeout_s)
    except TimeoutError:
        future.add_done_callback(_close_late_connection)
        raise
    if conn is None:  # very old bindings returned None instead of raising
        raise libvirt.libvirtError(f"libvirt.open({uri!r}) returned no connection")
    return conn


class _Shared:
    """The connections :func:`shared_connections` keeps open: one per URI."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: dict[str, Any] = {}

    def take(self, uri: str, timeout_s: float) -> Any:
        """The open connection to ``uri``, opened now if there is none or libvirt found the
        one kept dead (a host that restarted, a connection that broke)."""
        with self.lock:
            conn = self.conns.get(uri)
            if conn is not None:
                try:
                    alive = conn.isAlive() == 1
                except libvirt.libvirtError:
                    alive = False
                if alive:
                    return conn
                del self.conns[uri]
                _close_quietly(conn)
            conn = _open(uri, timeout_s)
            self.conns[uri] = conn
            return conn

    def close(self) -> None:
        with self.lock:
            conns, self.conns = list(self.conns.values()), {}
        for conn in conns:
            _close_quietly(conn)


_SHARED: ContextVar[_Shared | None] = ContextVar("vmferry_libvirt_shared", default=None)


@contextmanager
def shared_connections() -> Iterator[None]:
    """Within this block, in this thread, :meth:`LibvirtHost.connect` hands out one kept
    connection per URI instead of opening one each time (its ``close`` leaves it open);
    they are closed when the block ends. A move opened 15 TLS connections without it, each
    about 6 ms of CPU (docs/performance.md). Nested blocks share the outer one's."""
    if _SHARED.get() is not None:
        yield
        return
    shared = _Shared()
    token = _SHARED.set(shared)
    try:
        yield
    finally:
        _SHARED.reset(token)
        shared.close()


class LibvirtHost:
    """One open connection to a libvirt host, speaking vmferry model types.

    Create it with :meth:`connect`; use it as a context manager or call :meth:`close`.
    """

    def __init__(self, name: str, uri: str, conn: Any, *, kept: bool = False) -> None:
        """Wrap an open connection; use :meth:`connect` rather than calling this.
        ``kept``: a connection :func:`shared_connections` keeps (``close`` lets it go)."""
        self.name = name
        self.uri = uri
        self._conn: Any = conn
        self._kept = kept

    # -- connection ---------------------------------------------------------------------

    @classmethod
    def connect(
        cls, name: str, uri: str, *, timeout_s: float = 10, own: bool = False
    ) -> LibvirtHost:
        """Open ``uri`` for the host vmferry calls ``name`` (inside
        :func:`shared_connections`, the kept one, unless ``own``: a connection that
        listens for events needs its own, opened after the event loop started).

        Raises :class:`HostUnreachableError` when libvirt refuses the connection or does
        not answer within ``timeout_s`` seconds.
        """
        _silence_libvirt()
        shared = None if own else _SHARED.get()
        try:
            conn = _open(uri, timeout_s) if shared is None else shared.take(uri, timeout_s)
        except TimeoutError as exc:
            raise HostUnreachableError(
                f"host {name!r}: no answer from libvirt at {uri} within {timeout_s:g} s; "
                f"{_CHECK_HINT}",
                cause=exc,
            ) from exc
        except libvirt.libvirtError as exc:
            message = _message(exc)
            raise HostUnreachableError(
                f"host {name!r}: cannot connect to libvirt at {uri}: {message}; "
                f"{tls_remedy(message, uri) or _CHECK_HINT}",
                cause=exc,
            ) from exc
        return cls(name, uri, conn, kept=shared is not None)

    def close(self) -> None:
        """Close the connection (a kept one stays open for the next); closing twice is
        harmless."""
        conn, self._conn = self._conn, None
        if conn is not None and not self._kept:
            _close_quietly(conn)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"<LibvirtHost {self.name} {self.uri} {state}>"

    @property
    def _c(self) -> Any:
        if self._conn is None:
            raise VmferryError(f"the connection to host {self.name!r} ({self.uri}) is closed")
        return self._conn

    def _error(self, exc: libvirt.libvirtError, doing: str) -> VmferryError:
        """Translate a libvirt error raised while ``doing`` into a vmferry error."""
        code = exc.get_error_code()
        message = f"host {self.name!r}: {doing}: {_message(exc)}"
        if code in _NOT_FOUND_CODES:
            return NotFoundError(message, cause=exc)
        if code == libvirt.VIR_ERR_DOM_EXIST or (
            code == libvirt.VIR_ERR_OPERATION_FAILED and "already" in _message(exc)
        ):
            return AlreadyExistsError(message, cause=exc)
        if code in _BAD_INPUT_CODES:
            return BadInputError(message, cause=exc)
        if code in _CONNECTION_CODES or (
            code == libvirt.VIR_ERR_SYSTEM_ERROR
            and exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
        ):
            return HostUnreachableError(
                f"{message}; lost the connection to {self.uri}: {_CHECK_HINT}", cause=exc
            )
        return VmferryError(message, cause=exc)

    # -- events -------------------------------------------------------------------------

    def listen_lifecycle(self, callback: Callable[[str, int, int], None]) -> int:
        """Call ``callback(vm name, event, detail)`` for every lifecycle event of every VM on
        this host (libvirt's event loop must be running: :mod:`vmferry.drivers.libvirt_events`
        opens its own connections after starting it). Returns the id :meth:`stop_listening`
        takes."""

        def relay(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            callback(dom.name(), event, detail)

        try:
            return int(self._c.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, relay, None))  # fmt: skip
        except libvirt.libvirtError as exc:
            raise self._error(exc, "listen to lifecycle events") from exc

    def stop_listening(self, callback_id: int) -> None:
        with suppress(libvirt.libvirtError):
            self._c.domainEventDeregisterAny(callback_id)

    def listen_qemu_event(self, name: str, callback: Callable[[str, float], None]) -> int:
        """Call ``callback(vm name, QEMU's timestamp in s since the epoch)`` for every QMP
        event ``name`` (``STOP``, ``RESUME``) any VM's QEMU on this host emits. QEMU stamps
        each event with the host's clock as it happens. Returns the id
        :meth:`stop_listening_qemu` takes."""

        def relay(_conn: Any, dom: Any, _event: str, seconds: int, micros: int, _details: Any,
                  _opaque: Any) -> None:  # fmt: skip
            callback(dom.name(), seconds + micros / 1e6)

        try:
            return int(libvirt_qemu.qemuMonitorEventRegister(self._c, None, name, relay, None))
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"listen to QEMU's {name} events") from exc

    def stop_listening_qemu(self, callback_id: int) -> None:
        with suppress(libvirt.libvirtError):
            libvirt_qemu.qemuMonitorEventDeregister(self._c, callback_id)

    # -- host ---------------------------------------------------------------------------

    def info(self) -> HostInfo:
        """Identity and capacity of the host."""
        conn = self._c
        try:
            node = conn.getInfo()  # [arch, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
            cpu_model, cpu_arch = _host_cpu(conn.getCapabilities())
            version = int(conn.getLibVersion())
            info = HostInfo(
                name=self.name,
                hostname=str(conn.getHostname()),
                uri=str(conn.getURI()),
                hypervisor=str(conn.getType()),
                libvirt_version=_version_text(version),
                cpu_model=cpu_model,
                cpu_arch=cpu_arch or str(node[0]),
                cpus=int(node[2]),
                memory_bytes=int(node[1]) * _MiB,
                free_memory_bytes=int(conn.getFreeMemory()),
                hypervisor_version=_hypervisor_version(conn),
            )
        except libvirt.libvirtError as exc:
            raise self._error(exc, "reading host information") from exc
        return replace(info, memory_bytes=self._total_memory_bytes(info.memory_bytes))

    def _total_memory_bytes(self, fallback: int) -> int:
        # getInfo() rounds memory down to MiB; the node memory stats are exact (KiB).
        try:
            stats = self._c.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            return int(stats["total"]) * 1024
        except (libvirt.libvirtError, KeyError, TypeError, ValueError):
            return fallback

    def networks(self) -> list[str]:
        """Names of the host's libvirt networks (active or not), sorted."""
        try:
            return sorted(str(n.name()) for n in self._c.listAllNetworks(0))
        except libvirt.libvirtError as exc:
            raise self._error(exc, "listing networks") from exc

    def pools(self) -> list[str]:
        """Names of the host's storage pools (active or not), sorted."""
        try:
            return sorted(str(p.name()) for p in self._c.listAllStoragePools(0))
        except libvirt.libvirtError as exc:
            raise self._error(exc, "listing storage pools") from exc

    def refresh_pool(self, name: str) -> None:
        """Rescan storage pool ``name`` so volumes created outside libvirt show up."""
        try:
            self._c.storagePoolLookupByName(name).refresh(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"refreshing storage pool {name!r}") from exc

    def warm_capabilities(self) -> None:
        """Make libvirt probe (or load from its cache) the capabilities of every emulator."""
        try:
            self._c.getCapabilities()
        except libvirt.libvirtError as exc:
            raise self._error(exc, "reading capabilities") from exc

    def ensure_network(self, name: str, xml: str) -> None:
        """Make network ``name`` defined (from ``xml`` if absent), active and autostarted."""
        try:
            try:
                net = self._c.networkLookupByName(name)
            except libvirt.libvirtError:
                net = self._c.networkDefineXML(xml)
            if not net.isActive():
                net.create()
            net.setAutostart(1)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"setting up network {name!r}") from exc

    def ensure_dir_pool(self, name: str, path: str) -> None:
        """Make a directory storage pool ``name`` at ``path`` defined, built and active."""
        xml = (
            f"<pool type='dir'><name>{escape(name)}</name>"
            f"<target><path>{escape(path)}</path></target></pool>"
        )
        try:
            try:
                pool = self._c.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                pool = self._c.storagePoolDefineXML(xml, 0)
                pool.build(0)
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1)
            pool.refresh(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"setting up storage pool {name!r}") from exc

    # -- VMs ----------------------------------------------------------------------------

    def list_vms(self) -> list[VmRecord]:
        """Every VM on the host, persistent or transient, running or not, sorted by name.

        A VM libvirt holds for an incoming migration is listed with what needs no lock (its
        name, state, vCPUs and memory) and no devices: see :data:`_LOCKED_FOR_MIGRATION`."""
        try:
            domains = self._c.listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, "listing VMs") from exc
        records = []
        for dom in domains:
            try:
                records.append(self._record(dom))
            except NotFoundError:
                log.debug("a VM disappeared while listing host %s", self.name)
        return sorted(records, key=lambda r: r.spec.name)

    def get_vm(self, name: str) -> VmRecord:
        """The VM called ``name``; :class:`NotFoundError` if the host has none."""
        return self._record(self._lookup(name))

    def disk_path(self, disk: Disk) -> str | None:
        """The path of ``disk``'s source on this host: a volume (``pool/volume``) resolved
        through its pool, a file or block device as it is if it is a volume libvirt knows
        here; None otherwise (never raises)."""
        if disk.source is None:
            return None
        try:
            if disk.source_kind == "volume" and disk.pool:
                pool = self._c.storagePoolLookupByName(disk.pool)
                volume = pool.storageVolLookupByName(disk.source.removeprefix(f"{disk.pool}/"))
                return str(volume.path())
            if disk.source_kind in ("file", "block"):
                return str(self._c.storageVolLookupByPath(disk.source).path())
        except libvirt.libvirtError as exc:
            log.debug("host %s: no volume for disk %s: %s", self.name, disk.target, exc)
        return None

    def domain_xml(self, name: str) -> str:
        """The current (live when running) libvirt XML of VM ``name``."""
        dom = self._lookup(name)
        try:
            return str(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"reading the XML of VM {name!r}") from exc

    def definition_xml(self, name: str) -> str:
        """VM ``name``'s persistent definition (what starts it again elsewhere)."""
        dom = self._lookup(name)
        try:
            return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"reading the definition of VM {name!r}") from exc

    def define_xml(self, xml: str) -> None:
        """Define (or redefine) a persistent VM from libvirt domain XML."""
        try:
            self._c.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise self._error(exc, "defining a VM") from exc

    def start(self, name: str) -> None:
        """Start the defined VM ``name``."""
        dom = self._lookup(name)
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"starting VM {name!r}") from exc

    def destroy(self, name: str) -> None:
        """Power off VM ``name`` at once (like pulling the plug); its definition stays."""
        dom = self._lookup(name)
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            raise self._error(exc, f"stopping VM {name!r}") from exc

    def undefine(self, name: str, *, keep_nvram: bool = True) -> None:
        """Remove the definition of VM ``name`` (its disks stay).

        Managed-save images and snapshot/checkpoint metadata go with it; the UEFI NVRAM
        file stays unless ``keep_nvram`` is false. A running VM becomes transient.
        """
        dom = self._lookup(name)
        nvram = (
            libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
            if keep_nvram
            else libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
        # Not every driver knows every flag (the test driver refuses the NVRAM ones):
        # fall back to fewer flags only when the driver says the flags are the problem.
        attempts = (_UNDEFINE_COMMON | nvram, _UNDEFINE_COMMON, 0)
        for i, flags in enumerate(attempts):
            try:
                dom.undefineFlags(flags)
                return
            except libvirt.libvirtError as exc:
                unsupported = exc.get_error_code() in (
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_NO_SUPPORT,
                )
                if not unsupported or i == len(attempts) - 1:
                    raise self._error(exc, f"undefining VM {name!r}") from exc

    def running_vm_names(self) -> list[str]:
        """Names of the VMs running now, sorted."""
        try:
            active = self._c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            return sorted(str(d.name()) for d in active)
        except libvirt.libvirtError as exc:
            raise self._error(exc, "listing running VMs") from exc

    def destroy_all(self) -> list[str]:
        """Power off and undefine every VM on the host (the lab's teardown); names handled."""
        handled: list[str] = []
        for record in self.list_vms():
            name = record.spec.name
            try:
                if record.state != VmState.SHUT_OFF:
                    self.destroy(name)
                if record.persistent:
                    self.undefine(name)
            except NotFoundError:
                pass  # it went away by itself
            handled.append(name)
        return handled

    # -- internals ----------------------------------------------------------------------

    def _lookup(self, name: str) -> Any:
        try:
            return self._c.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFoundError(
                    f"host {self.name!r} has no VM named {name!r}; "
                    f"check the name with `virsh -c {self.uri} list --all`",
                    cause=exc,
                ) from exc
            raise self._error(exc, f"looking up VM {name!r}") from exc

    def _record(self, dom: Any) -> VmRecord:
        try:
            name = str(dom.name())
            state, reason = dom.state(0)
            persistent = bool(dom.isPersistent())
        except libvirt.libvirtError as exc:
            raise self._error(exc, "reading a VM") from exc
        if (state, reason) in _LOCKED_FOR_MIGRATION:
            return self._unlocked_record(dom, name, int(state), persistent)
        try:
            xml = str(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_TIMEOUT:  # another job's lock
                return self._unlocked_record(dom, name, int(state), persistent)
            raise self._error(exc, "reading a VM") from exc
        try:
            spec = parse_domain_xml(xml)
        except BadInputError as exc:
            raise VmferryError(
                f"host {self.name!r}: cannot read the XML libvirt gave for VM {name!r}: "
                f"{exc.message}",
                cause=exc,
            ) from exc
        vm_state = _STATES.get(int(state), VmState.NO_STATE)
        active = vm_state not in (VmState.SHUT_OFF, VmState.CRASHED, VmState.NO_STATE)
        disks = tuple(self._sized(dom, active, disk) for disk in spec.disks)
        return VmRecord(
            host=self.name,
            state=vm_state,
            persistent=persistent,
            spec=replace(spec, disks=disks),
        )

    def _unlocked_record(self, dom: Any, name: str, state: int, persistent: bool) -> VmRecord:
        """What libvirt tells of a VM without its lock: no devices."""
        try:
            _state, _max_kib, memory_kib, vcpus, _cpu_ns = dom.info()
            uuid = str(dom.UUIDString())
        except libvirt.libvirtError as exc:
            raise self._error(exc, "reading a VM") from exc
        spec = VmSpec(name, uuid, int(vcpus), int(memory_kib) * 1024)
        return VmRecord(self.name, _STATES.get(state, VmState.NO_STATE), persistent, spec,
                        devices_read=False)  # fmt: skip

    def _sized(self, dom: Any, active: bool, disk: Disk) -> Disk:
        """``disk`` with capacity and allocation filled in when libvirt can tell them.

        Never raises: a disk that cannot be sized keeps ``None`` sizes.
        """
        if disk.source is None or disk.source_kind == "none":
            return disk  # empty removable media
        conn, source, pool = self._c, disk.source, disk.pool
        sizers: list[Callable[[], tuple[int, int]]] = []
        if active:
            sizers.append(lambda: _sizes_from_block_info(dom.blockInfo(disk.target, 0)))
        if disk.source_kind == "volume" and pool:
            volume = source.removeprefix(f"{pool}/")
            sizers.append(
                lambda: _sizes_from_vol_info(
                    conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
                )
            )
        elif disk.source_kind in ("file", "block"):
            sizers.append(lambda: _sizes_from_vol_info(conn.storageVolLookupByPath(source)))
        for sizer in sizers:
            try:
                capacity, allocation = sizer()
            except (libvirt.libvirtError, TypeError, ValueError, IndexError) as exc:
                log.debug("host %s: cannot size disk %s: %s", self.name, disk.target, exc)
                continue
            return replace(disk, capacity_bytes=capacity, allocation_bytes=allocation)
        return disk


def _sizes_from_block_info(block_info: Any) -> tuple[int, int]:
    capacity, allocation, _physical = block_info
    return int(capacity), int(allocation)


def _sizes_from_vol_info(volume: Any) -> tuple[int, int]:
    _type, capacity, allocation = volume.info()
    return int(capacity), int(allocation)


def _version_text(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _hypervisor_version(conn: libvirt.virConnect) -> str | None:
    """QEMU's version as libvirt reports it (``virConnectGetVersion``), or None."""
    try:
        number = int(conn.getVersion())
    except (libvirt.libvirtError, TypeError, ValueError):
        return None
    return _version_text(number) if number > 0 else None


def _host_cpu(capabilities_xml: str) -> tuple[str | None, str | None]:
    """(model, arch) of the host CPU from libvirt's capabilities XML."""
    try:
        root = fromstring(capabilities_xml, forbid_dtd=True, forbid_entities=True)
    except (ParseError, DefusedXmlException):
        log.debug("unreadable capabilities XML", exc_info=True)
        return None, None
    cpu = root.find("host/cpu")
    if cpu is None:
        return None, None
    model = cpu.findtext("model")
    arch = cpu.findtext("arch")
    return (model.strip() or None) if model else None, (arch.strip() or None) if arch else None
