"""Golden files: the domain XML vmferry writes for each sample descriptor in tests/data/import.

Each sample's disks are made with qemu-img in a temporary directory beside a copy of the
descriptor, parsed with ``open_source``, mapped for a fixed destination and rendered; the
result must equal ``tests/data/import/golden/<sample>.xml``. After an intended change,
regenerate with ``VMFERRY_UPDATE_GOLDEN=1 pytest tests/unit/imports/test_import_golden.py``
and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vmferry.imports.domain_xml import render_domain_xml
from vmferry.imports.mapping import ImportOptions, plan_import
from vmferry.model.import_target import DestinationFacts, PoolFacts
from vmferry.sources import open_source

DATA = Path(__file__).resolve().parents[2] / "data" / "import"
GOLDEN = DATA / "golden"
SAMPLES = sorted([*DATA.glob("vmx/*.vmx"), *DATA.glob("ovf/*.ovf")])
DEST = DestinationFacts(
    host="kvm1",
    networks=frozenset({"vmnet"}),
    pools={"default": PoolFacts("default", "/var/lib/libvirt/images", 2**40, reachable=True)},
    domain_names=frozenset(),
    domain_type="kvm",
)
_DISK = re.compile(r'(?:fileName|ovf:href)\s*=\s*"([^"]+\.(vmdk|qcow2|iso))"', re.IGNORECASE)


def _materialize(sample: Path, directory: Path) -> Path:
    """Copy the descriptor and create every disk and ISO it names."""
    copy = directory / sample.name
    shutil.copy(sample, copy)
    for name, ext in _DISK.findall(sample.read_text()):
        target = directory / name
        if ext.lower() == "iso":
            target.write_bytes(b"\0" * 2048)
        else:
            subprocess.run(["qemu-img", "create", "-q", "-f", ext.lower(), str(target), "64M"],
                           check=True)  # fmt: skip
    return copy


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_domain_xml_matches_golden(sample: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    vm = open_source(_materialize(sample, tmp_path), workdir=work)
    plan = plan_import(vm, ImportOptions(network_map={"*": "vmnet"}), DEST)
    xml = render_domain_xml(plan)
    if vm.uuid is None:  # a fresh random UUID: not part of the golden file
        xml = xml.replace(plan.uuid, "RANDOM-UUID")
    golden = GOLDEN / f"{sample.stem}.xml"
    if os.environ.get("VMFERRY_UPDATE_GOLDEN"):
        golden.write_text(xml)
    assert golden.exists(), f"no golden file {golden}; run with VMFERRY_UPDATE_GOLDEN=1"
    assert xml == golden.read_text()


def test_every_golden_file_has_a_sample() -> None:
    assert {g.stem for g in GOLDEN.glob("*.xml")} == {s.stem for s in SAMPLES}
