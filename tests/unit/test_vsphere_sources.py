"""`vmferry sources add|list|remove` against VMware's vSphere simulator over HTTPS
(tests/support/vcsim.py): what is stored, and the one-line refusals that store nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import vcsim
from support.vcsim import Vcsim, running_vcsim, vsphere_cli

from vmferry.drivers.vsphere import ssl_context
from vmferry.errors import BadInputError


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with running_vcsim(tmp_path_factory.mktemp("vcsim")) as started:
        yield started


vmferry = vsphere_cli


def listed(db: Path) -> list[dict[str, object]]:
    done = vmferry(db, "sources", "list", "--json", password=None)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refusal (exit 2)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_add_insecure_stores_the_source_but_never_the_password(sim: Vcsim, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    done = vmferry(db, "sources", "add", "vc1", sim.vsphere_url(), "--insecure", "--json",
                   password=sim.password)  # fmt: skip
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout)
    assert added == {"name": "vc1", "url": sim.vsphere_url(), "host": sim.host,
                     "port": sim.port, "user": sim.user, "datacenter": None, "ca_file": None,
                     "insecure": True}  # fmt: skip
    assert listed(db) == [added]
    assert sim.password.encode() not in db.read_bytes()


def test_add_with_ca_and_datacenter(sim: Vcsim, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    done = vmferry(db, "sources", "add", "vc1", sim.vsphere_url(), "--ca", str(sim.ca_file),
                   "--datacenter", "DC0", password=sim.password)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [source] = listed(db)
    assert source["ca_file"] == str(sim.ca_file.resolve())
    assert source["datacenter"] == "DC0"
    assert source["insecure"] is False


def test_an_untrusted_certificate_is_refused_naming_ca_and_insecure(
    sim: Vcsim, tmp_path: Path
) -> None:
    db = tmp_path / "v.db"
    line = refused(vmferry(db, "sources", "add", "vc1", sim.vsphere_url(),
                           password=sim.password))  # fmt: skip
    assert f"vSphere at {sim.host}:{sim.port} has a certificate this machine does not trust" in line
    assert "--ca FILE" in line and "--insecure" in line
    assert listed(db) == []


def test_a_wrong_password_is_refused_and_nothing_stored(sim: Vcsim, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    line = refused(vmferry(db, "sources", "add", "vc1", sim.vsphere_url(), "--insecure",
                           password="not-" + sim.password))  # fmt: skip
    assert line.startswith(f"vmferry: vSphere at {sim.host} refused the user {sim.user}: ")
    assert listed(db) == []


def test_refusals_store_nothing(sim: Vcsim, tmp_path: Path) -> None:
    """An unknown datacenter, a closed port, a bad URL, a password in the URL, both trust
    options, no password and no terminal: one line each, exit 2, nothing stored."""
    db = tmp_path / "v.db"
    url = sim.vsphere_url()

    def add(*args: str, password: str | None = sim.password) -> str:
        return refused(vmferry(db, "sources", "add", "vc1", *args, password=password))

    assert "has no datacenter 'DC9' (it has: DC0)" in add(url, "--insecure", "--datacenter", "DC9")
    assert "did not answer" in add(f"vsphere://{sim.user}@127.0.0.1:1", "--insecure")
    assert "is not a vSphere URL" in add(sim.url, "--insecure")
    assert "holds a password" in add(f"vsphere://{sim.user}:pw@{sim.host}:{sim.port}")
    assert "exclude each other" in add(url, "--insecure", "--ca", str(sim.ca_file))
    assert "set VMFERRY_VSPHERE_PASSWORD" in add(url, "--insecure", password=None)
    assert listed(db) == []


def test_a_name_that_exists_is_refused(sim: Vcsim, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    args = ("sources", "add", "vc1", sim.vsphere_url(), "--insecure")
    assert vmferry(db, *args, password=sim.password).returncode == 0
    assert "a source named 'vc1' exists already" in refused(
        vmferry(db, *args[:-1], "--ca", str(sim.ca_file), password=sim.password)
    )
    [kept] = listed(db)
    assert kept["insecure"] is True


def test_list_and_remove(sim: Vcsim, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    for name in ("vc2", "vc1"):
        done = vmferry(db, "sources", "add", name, sim.vsphere_url(), "--insecure",
                       password=sim.password)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert [s["name"] for s in listed(db)] == ["vc1", "vc2"]
    table = vmferry(db, "sources", "list", password=None)
    assert table.returncode == 0 and "vc1" in table.stdout and "--insecure" in table.stdout
    assert vmferry(db, "sources", "remove", "vc1", password=None).returncode == 0
    assert [s["name"] for s in listed(db)] == ["vc2"]
    assert "no source named 'vc1'" in refused(vmferry(db, "sources", "remove", "vc1",
                                                      password=None))  # fmt: skip


def test_a_ca_file_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(BadInputError, match=f"cannot use --ca {not_pem}"):
        ssl_context(str(not_pem), insecure=False)


def test_a_missing_simulator_fails_the_test_naming_make_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vcsim, "VCSIM_BINARY", tmp_path / "no-vcsim")
    with pytest.raises(pytest.fail.Exception, match="`make install`"):  # noqa: SIM117
        with running_vcsim(tmp_path):
            pass
