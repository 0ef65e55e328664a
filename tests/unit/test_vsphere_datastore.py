"""A vSphere VM's disks read from the simulator's datastore over HTTPS (the session cookie,
range requests on several connections, retries), copied and proved as an import copies
them: both VMDK shapes give the original's bytes, a download that breaks is retried, one
that keeps breaking fails in one line and leaves no file behind."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from support.nbd_served import served_images
from support.vcsim import Vcsim, control, running_vcsim
from support.vcsim_disks import DATASTORE, MIB, admin, cookie_of, place_disk, virtual_sha256

from vmferry.drivers.datastore_http import DatastoreFile, RangeReader
from vmferry.drivers.qemu_img import ToolLimits
from vmferry.drivers.vsphere import vsphere_session
from vmferry.errors import ToolError
from vmferry.model.vsphere import VsphereSource
from vmferry.service.vsphere_disks import DatastoreAccess, copy_datastore_disk
from vmferry.sources import Limits
from vmferry.sources.vsphere_vm import datastore_url, parse_datastore_path


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with running_vcsim(tmp_path_factory.mktemp("vcsim")) as started:
        yield started


@pytest.fixture(scope="module")
def disks(sim: Vcsim, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The two shapes on two VMs: VM0 monolithicSparse, VM1 descriptor + flat."""
    made = tmp_path_factory.mktemp("disks")
    return {
        "monolithicSparse": place_disk(sim, made, "DC0_H0_VM0", "monolithicSparse"),
        "monolithicFlat": place_disk(sim, made, "DC0_H0_VM1", "monolithicFlat"),
    }


def source(sim: Vcsim) -> VsphereSource:
    return VsphereSource("vc1", sim.host, sim.port, sim.user, ca_file=str(sim.ca_file))


def copy(sim: Vcsim, vm: str, tmp_path: Path, connections: int = 4,
         bandwidth_mib_s: int = 0) -> tuple[Path, DatastoreAccess]:  # fmt: skip
    """The VM's first disk copied as the import does, into ``tmp_path``/copy.qcow2."""
    part = tmp_path / "copy.qcow2"
    with vsphere_session(source(sim), sim.password) as session:
        handle = session.find_vm(vm)
        access = DatastoreAccess(source(sim), handle.datacenter, session.session_cookie,
                                 ssl.create_default_context(cafile=str(sim.ca_file)),
                                 connections, bandwidth_mib_s)  # fmt: skip
        copy_datastore_disk(access, handle.raw.disks[0].file_name, part, workdir=tmp_path,
                            limits=Limits(), tool_limits=ToolLimits())  # fmt: skip
    return part, access


@pytest.mark.parametrize(("vm", "shape"), [("DC0_H0_VM0", "monolithicSparse"),
                                           ("DC0_H0_VM1", "monolithicFlat")])  # fmt: skip
def test_both_vmdk_shapes_give_the_original_bytes(
    sim: Vcsim,
    disks: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vm: str,
    shape: str,
) -> None:
    served = served_images(monkeypatch)
    part, access = copy(sim, vm, tmp_path)
    assert served == []  # a sparse file fetched is read in place, where QEMU maps its grains
    assert virtual_sha256(part, "qcow2", tmp_path) == disks[shape]
    assert sorted(tmp_path.iterdir()) == [part]  # a staged sparse file is gone
    read = [str(r.file.label) for r in access.readers]
    if shape == "monolithicFlat":  # the descriptor, then its raw extent straight
        assert read == [f"[{DATASTORE}] {vm}/{vm}-{shape}.vmdk",
                        f"[{DATASTORE}] {vm}/{vm}-{shape}-flat.vmdk"]  # fmt: skip
    else:
        assert read == [f"[{DATASTORE}] {vm}/{vm}-{shape}.vmdk"]


def test_a_disk_is_read_on_several_connections_at_once(
    sim: Vcsim, disks: dict[str, str], tmp_path: Path
) -> None:
    control(sim, "reset")
    control(sim, "fault", delay_ms=50)
    try:
        part, _access = copy(sim, "DC0_H0_VM1", tmp_path, connections=4)
    finally:
        control(sim, "fault")
    stats = control(sim, "stats")
    assert virtual_sha256(part, "qcow2", tmp_path) == disks["monolithicFlat"]
    assert stats["max_concurrent"] == 4  # never more than --connections, and all used
    ranges = [r for r in stats["ranges"] if isinstance(r, str)]  # type: ignore[union-attr]
    assert "bytes=0-4194303" in ranges and "bytes=20971520-25165823" in ranges
    assert all(r.startswith("bytes=") for r in ranges)  # every GET a range request


def test_a_bandwidth_cap_holds_every_connection_of_the_copy_to_it(
    sim: Vcsim, disks: dict[str, str], tmp_path: Path
) -> None:
    """24 MiB read on 4 connections at 8 MiB/s: the six 4 MiB ranges of the extent go out
    half a second apart at least, so the copy takes 2.5 s at least (unpaced: well under)."""
    began = time.monotonic()
    part, access = copy(sim, "DC0_H0_VM1", tmp_path, connections=4, bandwidth_mib_s=8)
    took = time.monotonic() - began
    assert virtual_sha256(part, "qcow2", tmp_path) == disks["monolithicFlat"]
    assert access.rate is not None and access.rate.bytes_per_s == 8 * MIB
    assert all(r.rate is access.rate for r in access.readers)  # one cap for every reader
    assert took >= 2.5
    assert access.rate.waited_s >= 2.5  # the readers waited in turn, at least that long


def test_a_broken_download_is_retried_and_still_proved(
    sim: Vcsim, disks: dict[str, str], tmp_path: Path
) -> None:
    control(sim, "fault", cut_after=100_000, count=3)  # three GETs cut after 100 kB
    try:
        part, access = copy(sim, "DC0_H0_VM1", tmp_path)
    finally:
        stats = control(sim, "fault")
    assert stats["cuts_served"] == 3
    assert sum(r.retried for r in access.readers) == 3
    assert virtual_sha256(part, "qcow2", tmp_path) == disks["monolithicFlat"]


@pytest.mark.parametrize("vm", ["DC0_H0_VM0", "DC0_H0_VM1"])
def test_a_download_that_keeps_breaking_fails_in_one_line(
    sim: Vcsim, disks: dict[str, str], tmp_path: Path, vm: str
) -> None:
    control(sim, "fault", cut_after=1000, count=1000)
    try:
        with pytest.raises(ToolError) as failed:
            copy(sim, vm, tmp_path, connections=2)
    finally:
        control(sim, "fault")
    message = failed.value.message
    assert "\n" not in message
    assert message.startswith(f"reading [{DATASTORE}] {vm}/") and "after 6 tries" in message
    assert not any(p.name != "copy.qcow2" for p in tmp_path.iterdir())  # nothing staged left


def test_a_simulator_that_goes_away_mid_copy_fails_the_copy_in_one_line(
    tmp_path: Path,
) -> None:
    """vCenter restarted while a disk is read (here: stopped 2 s into a copy held to
    2 MiB/s, 12 s of reading): every request then fails, is retried 5 times, and the copy
    stops with one line naming the file and the bytes."""
    (tmp_path / "sim").mkdir()
    with ExitStack() as running:
        sim = running.enter_context(running_vcsim(tmp_path / "sim"))
        place_disk(sim, tmp_path / "sim", "DC0_H0_VM1", "monolithicFlat")
        (tmp_path / "copy").mkdir()
        stop = threading.Timer(2.0, running.close)  # SIGTERM, as a restart begins
        stop.start()
        try:
            with pytest.raises(ToolError) as failed:
                copy(sim, "DC0_H0_VM1", tmp_path / "copy", bandwidth_mib_s=2)
        finally:
            stop.cancel()
    message = failed.value.message
    assert "\n" not in message
    assert message.startswith(f"reading [{DATASTORE}] DC0_H0_VM1/DC0_H0_VM1-monolithicFlat-flat"
                              ".vmdk failed at bytes ")  # fmt: skip
    assert "after 6 tries" in message


def test_the_datastore_answers_only_with_the_session_cookie(
    sim: Vcsim, disks: dict[str, str]
) -> None:
    path = parse_datastore_path(f"[{DATASTORE}] DC0_H0_VM1/DC0_H0_VM1-monolithicFlat.vmdk")
    url = datastore_url(sim.host, sim.port, path, "DC0")
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    with pytest.raises(ToolError, match=r"refused to read .* \(HTTP 401\)"):
        RangeReader(DatastoreFile(url, "other=1", context, str(path)))
    with (
        admin(sim) as instance,
        RangeReader(DatastoreFile(url, cookie_of(instance), context, str(path))) as reader,
    ):
        assert 0 < reader.size < 4096  # the descriptor
    missing = parse_datastore_path(f"[{DATASTORE}] DC0_H0_VM1/none.vmdk")
    with admin(sim) as instance, pytest.raises(ToolError, match="not on the datastore"):
        RangeReader(DatastoreFile(datastore_url(sim.host, sim.port, missing, "DC0"),
                                  cookie_of(instance), context, str(missing)))  # fmt: skip
    assert MIB  # the helper's unit, used by the fixtures
