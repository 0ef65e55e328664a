"""LibvirtHost against libvirt's in-process test driver (no daemon needed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from vmferry.drivers.libvirt_host import (
    LibvirtHost,
    client_ca_file,
    shared_connections,
    tls_remedy,
)
from vmferry.errors import (
    AlreadyExistsError,
    BadInputError,
    HostUnreachableError,
    NotFoundError,
    VmferryError,
)
from vmferry.model import CpuTopology, Disk, DiskDevice, HostInfo, Nic, VmState

NODE_XML = Path(__file__).resolve().parent.parent / "data" / "libvirt-test-node.xml"
CUSTOM_URI = f"test://{NODE_XML}"
GiB = 1024**3
MiB = 1024**2


@pytest.fixture
def default_host() -> Iterator[LibvirtHost]:
    with LibvirtHost.connect("default", "test:///default") as host:
        yield host


@pytest.fixture
def lab_host() -> Iterator[LibvirtHost]:
    with LibvirtHost.connect("lab1", CUSTOM_URI) as host:
        yield host


# -- test:///default --------------------------------------------------------------------


def test_default_driver_lists_its_running_test_vm(default_host: LibvirtHost) -> None:
    (vm,) = default_host.list_vms()
    assert vm.host == "default"
    assert vm.state is VmState.RUNNING
    assert vm.persistent
    assert vm.spec.name == "test"
    assert vm.spec.uuid == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert vm.spec.vcpus == 2
    assert vm.spec.memory_bytes == 8 * GiB
    assert vm.spec.domain_type == "test"
    (disk,) = vm.spec.disks
    assert (disk.target, disk.bus, disk.source) == ("vda", "virtio", "/guest/diskimage1")
    assert disk.capacity_bytes is not None  # running: sized by blockInfo
    assert disk.allocation_bytes is not None
    assert vm.spec.nics == (
        Nic(mac="aa:bb:cc:dd:ee:ff", kind="network", network="default", target_dev="testnet0"),
    )


def test_default_driver_host_info(default_host: LibvirtHost) -> None:
    info = default_host.info()
    assert isinstance(info, HostInfo)
    assert info.name == "default"
    assert info.uri == "test:///default"
    assert info.hypervisor == "TEST"
    assert info.libvirt_version.count(".") == 2
    assert int(info.libvirt_version.split(".")[0]) >= 9
    assert info.hypervisor_version == "0.0.2"  # the test driver says 2 (0.0.2)
    assert info.cpus == 16
    assert info.memory_bytes == 3 * GiB
    assert 0 <= info.free_memory_bytes <= info.memory_bytes
    assert info.cpu_arch
    assert info.hostname


def test_default_driver_networks_and_pools(default_host: LibvirtHost) -> None:
    assert default_host.networks() == ["default"]
    assert default_host.pools() == ["default-pool"]


def test_lifecycle_define_start_destroy_undefine(default_host: LibvirtHost) -> None:
    xml = default_host.domain_xml("test")
    clone = (
        xml.replace("<name>test</name>", "<name>clone</name>")
        .replace("6695eb01-f6a4-8304-79aa-97f2502e193f", "11111111-2222-3333-4444-555555555555")
        .replace("aa:bb:cc:dd:ee:ff", "52:54:00:00:00:01")
    )
    default_host.define_xml(clone)
    assert default_host.get_vm("clone").state is VmState.SHUT_OFF

    default_host.start("clone")
    assert default_host.get_vm("clone").state is VmState.RUNNING
    with pytest.raises(VmferryError):
        default_host.start("clone")  # already running

    default_host.destroy("clone")
    assert default_host.get_vm("clone").state is VmState.SHUT_OFF
    with pytest.raises(BadInputError, match="not running"):
        default_host.destroy("clone")

    default_host.undefine("clone")
    with pytest.raises(NotFoundError):
        default_host.get_vm("clone")
    assert [vm.spec.name for vm in default_host.list_vms()] == ["test"]


def test_define_xml_refuses_bad_xml_and_name_clashes(default_host: LibvirtHost) -> None:
    with pytest.raises(BadInputError, match="defining a VM"):
        default_host.define_xml("<domain>")
    with pytest.raises(BadInputError):
        default_host.define_xml("<domain type='test'><name>x</name></domain>")
    other_uuid = default_host.domain_xml("test").replace("6695eb01", "7695eb01")
    with pytest.raises(AlreadyExistsError, match="already exists"):
        default_host.define_xml(other_uuid)


@pytest.mark.parametrize("action", ["get_vm", "domain_xml", "start", "destroy", "undefine"])
def test_unknown_vm_is_not_found(default_host: LibvirtHost, action: str) -> None:
    with pytest.raises(NotFoundError, match="no VM named 'ghost'") as excinfo:
        getattr(default_host, action)("ghost")
    assert excinfo.value.exit_code == 2
    assert "test:///default" in excinfo.value.message


def test_closed_host_says_so() -> None:
    host = LibvirtHost.connect("default", "test:///default")
    host.close()
    host.close()  # harmless
    with pytest.raises(VmferryError, match="closed"):
        host.list_vms()


# -- custom test-driver node ----------------------------------------------------------


def test_custom_node_lists_every_vm_with_state_and_persistence(lab_host: LibvirtHost) -> None:
    vms = {vm.spec.name: vm for vm in lab_host.list_vms()}
    assert sorted(vms) == ["batch03", "db02", "scratch04", "web01"]
    assert {name: (vm.state, vm.persistent) for name, vm in vms.items()} == {
        "web01": (VmState.RUNNING, True),
        "db02": (VmState.SHUT_OFF, True),
        "batch03": (VmState.PAUSED, True),
        "scratch04": (VmState.RUNNING, False),  # transient
    }
    assert all(vm.host == "lab1" for vm in vms.values())


def test_custom_node_running_vm_spec(lab_host: LibvirtHost) -> None:
    spec = lab_host.get_vm("web01").spec
    assert spec.uuid == "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
    assert (spec.vcpus, spec.memory_bytes) == (4, 4 * GiB)
    assert spec.topology == CpuTopology(sockets=1, cores=2, threads=2)
    root, cdrom = spec.disks
    assert root.capacity_bytes is not None  # running: blockInfo
    # empty removable media is kept but never sized
    assert cdrom == Disk(
        target="sda", bus="sata", device=DiskDevice.CDROM, source_kind="none", readonly=True
    )
    assert spec.nics == (
        Nic(
            mac="52:54:00:aa:01:01",
            kind="network",
            model="virtio",
            network="prod",
            portgroup="web",
            target_dev="testnet0",  # given by the test driver when the VM started
        ),
    )


def test_custom_node_shut_off_vm_disks_sized_from_pool_volumes(lab_host: LibvirtHost) -> None:
    record = lab_host.get_vm("db02")
    assert record.state is VmState.SHUT_OFF
    by_target = {d.target: d for d in record.spec.disks}
    # a file disk that is a pool volume: storageVolLookupByPath
    assert (by_target["vda"].capacity_bytes, by_target["vda"].allocation_bytes) == (
        20 * GiB,
        3 * GiB,
    )
    # a <disk type='volume'>: looked up in its pool
    assert by_target["vdb"].source == "lab-pool/db02-data.img"
    assert (by_target["vdb"].capacity_bytes, by_target["vdb"].allocation_bytes) == (
        50 * GiB,
        50 * GiB,
    )
    # a file no pool knows: unsized, and the inventory still works
    assert (by_target["vdc"].capacity_bytes, by_target["vdc"].allocation_bytes) == (None, None)
    assert record.spec.nics[0].bridge == "br-lan"


def test_custom_node_host_info_networks_and_pools(lab_host: LibvirtHost) -> None:
    info = lab_host.info()
    assert info.uri == CUSTOM_URI
    assert info.cpus == 16
    assert info.memory_bytes == 32 * GiB
    assert lab_host.networks() == ["backup", "prod"]
    assert lab_host.pools() == ["lab-pool"]
    lab_host.refresh_pool("lab-pool")
    with pytest.raises(NotFoundError, match="no-such-pool"):
        lab_host.refresh_pool("no-such-pool")


# -- unreachable hosts ------------------------------------------------------------------


def test_unreachable_lab_address_raises_within_the_timeout() -> None:
    uri = "qemu+tcp://198.18.255.254/system"
    started = time.monotonic()
    with pytest.raises(HostUnreachableError) as excinfo:
        LibvirtHost.connect("far", uri, timeout_s=2)
    assert time.monotonic() - started < 4
    assert uri in excinfo.value.message
    assert "check that the host is up" in excinfo.value.message


@pytest.fixture
def silent_tcp_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung libvirtd)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    server.close()


def test_silent_libvirt_times_out(silent_tcp_server: int) -> None:
    uri = f"qemu+tcp://127.0.0.1:{silent_tcp_server}/system"
    started = time.monotonic()
    with pytest.raises(HostUnreachableError, match=r"no answer .* within 1 s") as excinfo:
        LibvirtHost.connect("hung", uri, timeout_s=1)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3
    assert "'hung'" in excinfo.value.message
    assert isinstance(excinfo.value.__cause__, TimeoutError)


def test_connection_arriving_after_the_timeout_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = threading.Event()
    release = threading.Event()

    class LateConnection:
        def close(self) -> int:
            closed.set()
            return 0

    def slow_open(uri: str) -> LateConnection:
        release.wait(5)
        return LateConnection()

    monkeypatch.setattr("libvirt.open", slow_open)
    with pytest.raises(HostUnreachableError, match=r"within 0\.2 s"):
        LibvirtHost.connect("slow", "qemu+tcp://slow.example/system", timeout_s=0.2)
    release.set()
    assert closed.wait(5)


def test_refused_uri_raises_host_unreachable() -> None:
    with pytest.raises(HostUnreachableError, match="cannot connect to libvirt at test:///"):
        LibvirtHost.connect("broken", "test:///nonexistent/node.xml", timeout_s=2)


def test_tls_errors_name_the_file_or_the_certificate_to_fix() -> None:
    uri = "qemu+tls://kvm1/system?pkipath=/etc/vmferry/pki"
    missing = tls_remedy("Cannot access CA certificate '/etc/pki/CA/cacert.pem': No such file",
                         uri)  # fmt: skip
    assert missing is not None and "/etc/pki/CA/cacert.pem is missing" in missing
    unread = tls_remedy("Cannot read CA certificate '/p/cacert.pem': No such file", uri)
    assert unread is not None and "/p/cacert.pem is missing" in unread
    untrusted = tls_remedy("authentication failed: Failed to verify peer's certificate", uri)
    assert untrusted is not None and "the CA in /etc/vmferry/pki/cacert.pem" in untrusted
    name = tls_remedy("Certificate servercert owner does not match the hostname 10.0.0.9", uri)
    assert name is not None and "does not name 10.0.0.9" in name
    assert tls_remedy("Connection refused", uri) is None


def test_the_ca_file_a_tls_client_checks_against() -> None:
    assert client_ca_file("qemu+tls://h/system?pkipath=/p&no_verify=0") == "/p/cacert.pem"
    assert client_ca_file("qemu+tls://h/system") == "/etc/pki/CA/cacert.pem"
    assert client_ca_file("qemu+tls://h/system", root=False) == "~/.pki/libvirt/cacert.pem"


def test_shared_connections_keep_one_connection_per_uri_for_the_block() -> None:
    """A test:///FILE host is a new, separate host at every open: what one handle did is
    seen by the next only when both are the same connection."""

    def names() -> set[str]:
        return {vm.spec.name for vm in host.list_vms()}

    with shared_connections():
        with LibvirtHost.connect("t", CUSTOM_URI) as host:
            before = names()
            gone = next(v.spec.name for v in host.list_vms() if v.state is VmState.SHUT_OFF)
            host.undefine(gone)
        with LibvirtHost.connect("t", CUSTOM_URI) as host:  # the kept one
            assert names() == before - {gone}
            kept = host
        with LibvirtHost.connect("t", CUSTOM_URI, own=True) as host:  # its own: a new host
            assert names() == before
        with shared_connections(), LibvirtHost.connect("t", CUSTOM_URI) as host:  # nested
            assert names() == before - {gone}
    assert kept._conn is None  # the handle let it go; the block closed the connection
    with LibvirtHost.connect("t", CUSTOM_URI) as host:  # outside the block: a new one
        assert names() == before


class LockedDom:
    """A domain libvirt holds for an incoming migration: what needs no lock answers,
    reading its XML times out (as libvirt 11.3.0's did for 30 s on a split VM's copy)."""

    def __init__(self, state: tuple[int, int]) -> None:
        self.state_, self.xml_asked = state, 0

    def name(self) -> str:
        return "split1"

    def state(self, _flags: int) -> tuple[int, int]:
        return self.state_

    def isPersistent(self) -> int:
        return 1

    def info(self) -> list[int]:
        return [self.state_[0], 524288, 524288, 1, 2630000000]

    def UUIDString(self) -> str:
        return "6695eb01-f6a4-8304-79aa-97f2502e1940"

    def XMLDesc(self, _flags: int) -> str:
        self.xml_asked += 1
        exc = libvirt.libvirtError("cannot acquire state change lock")
        exc.err = (libvirt.VIR_ERR_OPERATION_TIMEOUT, 10, "Timed out during operation", 2)
        raise exc


def test_a_vm_held_for_an_incoming_migration_is_listed_without_its_devices(
    default_host: LibvirtHost,
) -> None:
    postcopy_failed = LockedDom((libvirt.VIR_DOMAIN_RUNNING,
                                 libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED))  # fmt: skip
    record = default_host._record(postcopy_failed)
    assert postcopy_failed.xml_asked == 0  # known to be held: not waited for
    assert (record.host, record.state, record.persistent) == ("default", VmState.RUNNING, True)
    spec = record.spec
    assert (spec.name, spec.vcpus, spec.memory_bytes) == ("split1", 1, 512 * MiB)
    assert (record.spec.disks, record.spec.nics, record.devices_read) == ((), (), False)
    incoming = LockedDom((libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION))
    record = default_host._record(incoming)
    assert incoming.xml_asked == 1 and record.state is VmState.PAUSED  # waited, then this
    assert record.spec.uuid == "6695eb01-f6a4-8304-79aa-97f2502e1940"
    assert record.devices_read is False
