"""`--strategy live-import`: its decisions (pure), the XML of a disk over an NBD backing, a
real nbdkit serving a file through its curl plugin as it serves a datastore file, and
against the simulator what blocks it and what the command refuses, with the source left
running. The whole run (a guest on a lab host, the stream broken and resumed, the proof) is
tests/lab/test_vsphere_import_lab.py's."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from defusedxml.ElementTree import fromstring
from support.vcsim import Vcsim, running_vcsim, store_with_source, vsphere_cli
from support.vcsim_disks import power_state

from vmferry.drivers.domain_edit import with_nbd_backing
from vmferry.drivers.nbd_client import NbdClient
from vmferry.drivers.nbdkit_datastore import (
    DatastoreExport,
    NbdkitServer,
    nbdkit_argv,
    pick_port,
    route_source,
)
from vmferry.errors import ToolError, VmferryError
from vmferry.imports.live_import import clean_ranges, convert_blocker, resume_delay, stream_share
from vmferry.model.finding import Severity
from vmferry.model.vsphere import VsphereVmRef
from vmferry.service import import_vm, vsphere_import

VM = "DC0_H0_VM0"  # VMware Tools run in it
MIB = 2**20


# -- decisions -------------------------------------------------------------------------------


def test_clean_ranges_leave_out_what_the_guest_wrote_in_pieces_of_at_most_a_chunk() -> None:
    assert clean_ranges(10, [], chunk=4) == [(0, 4), (4, 4), (8, 2)]
    assert clean_ranges(10, [(2, 3)], chunk=4) == [(0, 2), (5, 4), (9, 1)]
    # unsorted, overlapping, touching the end, past the end
    assert clean_ranges(10, [(6, 2), (1, 2), (2, 2), (9, 5)], chunk=8) == [(0, 1), (4, 2), (8, 1)]
    assert clean_ranges(10, [(0, 10)]) == []
    with pytest.raises(ValueError, match="chunk 0"):
        clean_ranges(10, [], chunk=0)


def test_a_broken_stream_waits_longer_each_time_up_to_a_ceiling() -> None:
    assert [resume_delay(n) for n in (1, 2, 3, 4, 5, 6, 9)] == [2, 4, 8, 16, 30, 30, 30]
    with pytest.raises(ValueError):
        resume_delay(0)


def test_a_live_imports_bandwidth_is_shared_by_its_disks_streams() -> None:
    mib = 2**20
    assert stream_share(0, 3) == 0  # no cap
    assert stream_share(10, 1) == 10 * mib
    assert stream_share(10, 4) == 10 * mib // 4  # 2.5 MiB/s each (libvirt takes bytes/s)
    assert stream_share(2, 8) == mib  # never under 1 MiB/s a disk


def test_a_guest_to_convert_blocks_a_live_import() -> None:
    found = convert_blocker("win1")
    assert (found.id, found.severity) == ("import.live.convert", Severity.BLOCKER)
    assert "win1" in found.message and "--strategy cold" in found.remediation


DOMAIN = """<domain type='kvm'><name>v</name><devices>
<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
<source pool='p' volume='v-disk0'/><target dev='vda' bus='virtio'/></disk>
<disk type='volume' device='disk'><source pool='p' volume='v-disk1'/>
<target dev='vdb' bus='virtio'/></disk>
<disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
</devices></domain>"""


def test_each_disk_named_gets_its_nbd_backing_and_pauses_the_guest_on_errors() -> None:
    xml = with_nbd_backing(DOMAIN, {"vda": ("198.18.0.254", 10900, "tok-a"),
                                    "vdb": ("198.18.0.254", 10901, "tok-b")})  # fmt: skip
    root = fromstring(xml)
    disks = {d.find("target").get("dev"): d for d in root.iter("disk")}
    for target, port, name in (("vda", "10900", "tok-a"), ("vdb", "10901", "tok-b")):
        disk = disks[target]
        driver = disk.find("driver")
        assert (driver.get("error_policy"), driver.get("rerror_policy")) == ("stop", "stop")
        backing = disk.find("backingStore")
        assert backing.get("type") == "network"
        assert backing.find("format").get("type") == "raw"
        source = backing.find("source")
        assert (source.get("protocol"), source.get("name")) == ("nbd", name)
        host = source.find("host")
        assert (host.get("name"), host.get("port")) == ("198.18.0.254", port)
        assert disk.find("source").get("volume") == f"v-disk{target == 'vdb':d}"
    assert disks["sda"].find("backingStore") is None  # the CD-ROM is left alone
    with pytest.raises(VmferryError, match="no disk vdz"):
        with_nbd_backing(DOMAIN, {"vdz": ("a", 1, "t")})


def _export(tmp_path: Path, url: str, size: int, **kw: object) -> DatastoreExport:
    cookie = tmp_path / "cookie"
    cookie.write_text("vmware_soap_session=secret-cookie")
    return DatastoreExport(url, size, cookie, "127.0.0.1", pick_port("127.0.0.1"),
                           "tok-" + os.urandom(6).hex(), **kw)  # type: ignore[arg-type]  # fmt: skip


def test_nbdkits_command_line_keeps_the_cookie_and_the_token_off_it_where_it_can(
    tmp_path: Path,
) -> None:
    export = _export(tmp_path, "https://vc:443/folder/a-flat.vmdk?dsName=d", 5 * MIB,
                     ca_file="/etc/ca.pem")  # fmt: skip
    argv = nbdkit_argv(export, tmp_path / "nbdkit.pid")
    assert "secret-cookie" not in " ".join(argv)  # read by nbdkit from the file
    assert f"cookie=+{export.cookie_file}" in argv and "--readonly" in argv
    assert "--exit-with-parent" in argv and "cainfo=/etc/ca.pem" in argv
    assert "sslverify=false" not in argv
    assert {"exportname-strict=true", "exportname-list=error", f"truncate={5 * MIB}"} <= set(argv)
    insecure = nbdkit_argv(_export(tmp_path, "https://vc/x", 1, insecure=True), tmp_path / "p")
    assert "sslverify=false" in insecure and not [a for a in insecure if "cainfo" in a]
    assert "token" not in repr(export) and export.name not in repr(export)


def test_this_machines_address_toward_a_peer_is_found_without_sending_anything() -> None:
    assert route_source("127.0.0.1") == "127.0.0.1"
    with pytest.raises(ToolError, match="no route"):
        route_source("no-such-host.invalid")


# -- a real nbdkit ---------------------------------------------------------------------------


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """A raw "extent" longer than the disk it holds (its tail is past the capacity)."""
    path = tmp_path / "disk-flat.vmdk"
    path.write_bytes(os.urandom(3 * MIB) + b"\xff" * MIB)
    return path


def _read(export: DatastoreExport, name: str, offset: int, length: int) -> bytes:
    client = NbdClient.connect_tcp(export.address, export.port, export=name, timeout_s=10)
    try:
        buf = memoryview(bytearray(length))
        client.read(offset, buf).fill_holes()
        assert client.size == export.size
        return bytes(buf)
    finally:
        client.close()


def test_nbdkit_serves_the_file_read_only_by_its_token_cut_at_the_capacity_and_restarts(
    tmp_path: Path, flat: Path
) -> None:
    export = _export(tmp_path, flat.as_uri(), 3 * MIB)
    server = NbdkitServer(export, tmp_path / "nbdkit.log")
    server.start()
    try:
        data = flat.read_bytes()
        assert _read(export, export.name, MIB - 7, MIB) == data[MIB - 7 : 2 * MIB - 7]
        with pytest.raises(ToolError):  # no token, a wrong one: refused
            _read(export, "", 0, 512)
        with pytest.raises(ToolError):
            _read(export, "guess", 0, 512)
        client = NbdClient.connect_tcp(export.address, export.port, export=export.name)
        assert client.read_only
        client.close()
        first = server.pid
        server.restart()  # the same address and port: QEMU reconnects there
        assert server.alive() and server.pid != first and server.starts == 2
        assert _read(export, export.name, 3 * MIB - 512, 512) == data[3 * MIB - 512 : 3 * MIB]
    finally:
        server.stop()
    assert not server.alive()


def test_nbdkit_that_cannot_serve_says_why(tmp_path: Path) -> None:
    export = _export(tmp_path, "https://127.0.0.1:1/x", MIB)
    taken = NbdkitServer(export, tmp_path / "a.log")
    taken.start()  # the curl plugin connects lazily: this one listens
    try:
        again = NbdkitServer(export, tmp_path / "b.log")  # the same port: in use
        with pytest.raises(ToolError, match="nbdkit could not serve"):
            again.start()
    finally:
        taken.stop()


# -- against the simulator -------------------------------------------------------------------


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Vcsim]:
    workdir = tmp_path / "sim"
    workdir.mkdir()
    with running_vcsim(workdir, tools_running=(VM,)) as started:
        yield started


@pytest.fixture
def db(sim: Vcsim, tmp_path: Path) -> Path:
    """A store with the simulator as source vc1 and libvirt's test driver as host t1."""
    return store_with_source(sim, tmp_path / "v.db")


vmferry = vsphere_cli


def test_a_live_import_dry_run_names_what_blocks_it_and_leaves_the_vm_running(
    sim: Vcsim, db: Path
) -> None:
    findings = {}
    for convert in ("always", "never"):
        done = vmferry(db, "import", f"vsphere://vc1/{VM}", "--to", "t1", "--dry-run", "--json",
                       "--strategy", "live-import", "--convert-guest", convert,
                       password=sim.password)  # fmt: skip
        assert done.returncode == 0, done.stderr
        findings[convert] = {f["id"]: f["severity"] for f in json.loads(done.stdout)["findings"]}
    assert findings["always"]["import.live.convert"] == "blocker"
    assert "import.live.convert" not in findings["never"]
    # the simulator's disks are flat (ESXi's shape): nothing else of a live import's blocks
    assert not [f for f in findings["never"] if f.startswith("import.vsphere.live")]
    assert power_state(sim, VM) == "poweredOn"


@pytest.mark.parametrize(("args", "said"), [
    (("--strategy", "live"), "--strategy 'live': expected cold, warm or live-import"),
    (("--strategy", "live-import", "--cutover-at", "2030-01-01T00:00"),
     "--cutover-at is for --strategy warm"),
    (("--serve-address", "10.0.0.1"), "--serve-address is for --strategy live-import"),
    (("--strategy", "live-import", "--bandwidth", "-1"), "--bandwidth -1: expected >= 0"),
    (("--bandwidth", "-2"), "--bandwidth -2: expected >= 0"),
])  # fmt: skip
def test_bad_live_import_options_are_one_line_errors(
    sim: Vcsim, db: Path, args: tuple[str, ...], said: str
) -> None:
    done = vmferry(db, "import", f"vsphere://vc1/{VM}", "--to", "t1", *args,
                   password=sim.password)  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("vmferry: ")]
    assert len(errors) == 1 and said in errors[0], done.stderr
    assert power_state(sim, VM) == "poweredOn"


def test_a_file_import_refuses_the_live_import_options(tmp_path: Path) -> None:
    done = vmferry(tmp_path / "v.db", "import", str(tmp_path / "a.vmdk"), "--to", "t1",
                   "--serve-address", "10.0.0.1", password=None)  # fmt: skip
    assert done.returncode == 2 and "are for vsphere:// sources" in done.stderr


def test_ctrl_c_after_the_stop_powers_the_source_on_again(
    sim: Vcsim, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted once the VM is stopped (here: right after), without --rollback: the
    source runs again on vSphere."""
    monkeypatch.setenv("VMFERRY_DB", f"sqlite:///{db}")

    def interrupted(*_args: object, before_copy: import_vm.BeforeCopyFn, **_kw: object) -> None:
        before_copy(None, None)  # type: ignore[arg-type]  # the VM is stopped here
        assert power_state(sim, VM) == "poweredOff"
        raise KeyboardInterrupt

    monkeypatch.setattr(import_vm, "import_source", interrupted)
    ref = VsphereVmRef("vc1", VM, sim.password)
    notes: list[str] = []
    request = import_vm.ImportRequest(source=ref, to="t1")
    with pytest.raises(KeyboardInterrupt):
        vsphere_import.import_from_vsphere(request, ref, notes.append, lambda _i, _p: None)
    assert power_state(sim, VM) == "poweredOn"
    assert f"interrupted: powering {VM} on again on vSphere" in notes


def test_the_agent_channels_state_is_read_from_the_running_domains_xml() -> None:
    from vmferry.drivers.libvirt_stream import agent_channel_state

    def domain(channels: str) -> str:
        return f"<domain><devices>{channels}<disk/></devices></domain>"

    agent = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'{}/></channel>"
    other = "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>"
    assert agent_channel_state(domain(other)) is None  # no agent channel
    assert agent_channel_state(domain(other + agent.format(" state='connected'"))) == "connected"
    assert agent_channel_state(domain(agent.format(" state='disconnected'"))) == "disconnected"
    assert agent_channel_state(domain(agent.format(""))) == "disconnected"  # not started yet
