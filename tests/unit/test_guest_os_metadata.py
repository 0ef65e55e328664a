"""The guest OS of a VM: read from the libosinfo metadata of its domain XML (what
virt-install, virt-manager, virt-v2v and vmferry's import write) into ``VmSpec.guest_os``,
and written by vmferry's import when the source names the OS precisely enough."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from defusedxml import ElementTree as SafeET

from vmferry.drivers.domain_xml import parse_domain_xml
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BadInputError
from vmferry.imports.domain_xml import libosinfo_id, render_domain_xml
from vmferry.imports.mapping import ImportOptions, plan_import
from vmferry.model.import_target import DestinationFacts, PoolFacts
from vmferry.model.source_vm import GuestOs, SourceFormat, SourceVm
from vmferry.sources.guest_os import from_ovf, from_vmware_id

NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"


def domain(metadata: str = "") -> str:
    return f"""<domain type='kvm'>
  <name>web1</name>
  <uuid>c2cd4491-2d34-421f-bd96-3e60c19543a0</uuid>
  {metadata}
  <memory unit='MiB'>512</memory>
</domain>"""


VIRT_INSTALL = f"""<metadata>
    <libosinfo:libosinfo xmlns:libosinfo="{NS}">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>"""
# as `virsh dumpxml` gives it back (libvirt moves the declaration onto <metadata>)
LIBVIRT_DUMP = f"""<metadata xmlns:libosinfo="{NS}">
    <libosinfo:libosinfo>
      <libosinfo:os id="http://microsoft.com/win/2k19"/>
    </libosinfo:libosinfo>
  </metadata>"""


def test_a_domain_without_metadata_has_no_guest_os() -> None:
    assert parse_domain_xml(domain()).guest_os is None


@pytest.mark.parametrize(
    ("metadata", "guest_os"),
    [
        (VIRT_INSTALL, "http://debian.org/debian/12"),
        (LIBVIRT_DUMP, "http://microsoft.com/win/2k19"),
        # other applications' metadata beside it
        (f"<metadata><app:x xmlns:app='urn:app'><app:os id='nope'/></app:x>"
         f"<o:libosinfo xmlns:o='{NS}'><o:os id=' http://redhat.com/rhel/9-unknown '/>"
         "</o:libosinfo></metadata>", "http://redhat.com/rhel/9-unknown"),
    ],
)  # fmt: skip
def test_the_guest_os_is_the_libosinfo_id_whole(metadata: str, guest_os: str) -> None:
    spec = parse_domain_xml(domain(metadata))
    assert spec.guest_os == guest_os
    assert (spec.name, spec.memory_bytes) == ("web1", 512 * 2**20)


@pytest.mark.parametrize(
    "metadata",
    [
        "<metadata/>",
        "<metadata><app:x xmlns:app='urn:app'><app:os id='http://debian.org/debian/12'/>"
        "</app:x></metadata>",  # not libosinfo's namespace
        "<metadata><libosinfo><os id='http://debian.org/debian/12'/></libosinfo></metadata>",
        f"<metadata><o:libosinfo xmlns:o='{NS}'><o:os/></o:libosinfo></metadata>",
        f"<metadata><o:libosinfo xmlns:o='{NS}'><o:os id='  '/></o:libosinfo></metadata>",
        f"<o:libosinfo xmlns:o='{NS}'><o:os id='http://debian.org/debian/12'/></o:libosinfo>",
    ],
)
def test_no_libosinfo_id_in_the_metadata_is_no_guest_os(metadata: str) -> None:
    assert parse_domain_xml(domain(metadata)).guest_os is None


def test_an_absurdly_long_id_is_refused() -> None:
    metadata = f"<metadata><o:libosinfo xmlns:o='{NS}'><o:os id='http://{'a' * 300}'/>"
    with pytest.raises(BadInputError, match="libosinfo os id is 307 characters long"):
        parse_domain_xml(domain(metadata + "</o:libosinfo></metadata>"))


# -- written by the import ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guest", "expected"),
    [
        (from_vmware_id("debian12-64"), "http://debian.org/debian/12"),
        (from_vmware_id("debian10"), "http://debian.org/debian/10"),
        (from_vmware_id("debian12_64Guest"), "http://debian.org/debian/12"),
        (from_vmware_id("windows2019srv-64"), "http://microsoft.com/win/2k19"),
        (from_vmware_id("windows2019srvNext-64"), "http://microsoft.com/win/2k22"),
        (from_vmware_id("windows9-64"), "http://microsoft.com/win/10"),
        (from_vmware_id("windows7srv-64"), "http://microsoft.com/win/2k8r2"),
        (from_vmware_id("rhel9-64"), "http://redhat.com/rhel/9-unknown"),
        (from_ovf("80", None, "9"), "http://redhat.com/rhel/9-unknown"),
        (from_ovf("115", None), "http://microsoft.com/win/2k12r2"),
        # not precise enough, or not known here: nothing rather than a guess
        (from_vmware_id("rhel5-64"), None),
        (from_vmware_id("ubuntu-64"), None),
        (from_ovf("96", None), None),  # Debian, no version
        (from_vmware_id("windows2022srvNext-64"), None),  # 2025: not in this osinfo table
        (from_vmware_id("winNT"), None),
        (from_vmware_id("freebsd13-64"), None),
        (from_vmware_id("otherGuest64"), None),
        (GuestOs(), None),
    ],
)
def test_the_libosinfo_id_of_a_source_guest(guest: GuestOs, expected: str | None) -> None:
    assert libosinfo_id(guest) == expected


DEST = DestinationFacts(
    host="kvm1",
    networks=frozenset({"vmnet"}),
    pools={"default": PoolFacts("default", "/var/lib/libvirt/images", 2**40, reachable=True)},
    domain_names=frozenset(),
    domain_type="kvm",
)


def imported(name: str, guest: GuestOs) -> str:
    vm = SourceVm(name, SourceFormat.VMX, vcpus=1, memory_mb=256, guest_os=guest,
                  uuid=str(uuid.uuid4()))  # fmt: skip
    return render_domain_xml(plan_import(vm, ImportOptions(), DEST))


def test_the_import_writes_the_metadata_that_the_inventory_reads() -> None:
    xml = imported("deb", from_vmware_id("debian12-64"))
    root = SafeET.fromstring(xml)
    (os_el,) = root.findall(f"metadata/{{{NS}}}libosinfo/{{{NS}}}os")
    assert os_el.attrib == {"id": "http://debian.org/debian/12"}
    assert [child.tag for child in root][:4] == ["name", "uuid", "metadata", "memory"]
    assert parse_domain_xml(xml).guest_os == "http://debian.org/debian/12"


def test_the_import_writes_no_metadata_for_a_guest_it_cannot_name() -> None:
    xml = imported("ubu", from_vmware_id("ubuntu-64"))
    assert SafeET.fromstring(xml).find("metadata") is None
    assert "libosinfo" not in xml
    assert parse_domain_xml(xml).guest_os is None


@pytest.fixture
def test_driver() -> Iterator[LibvirtHost]:
    with LibvirtHost.connect("t1", "test:///default") as host:
        yield host


def test_libvirt_keeps_the_imported_metadata_and_the_inventory_reads_it(
    test_driver: LibvirtHost,
) -> None:
    test_driver.define_xml(imported("win-import", from_vmware_id("windows2019srv-64")))
    record = test_driver.get_vm("win-import")
    assert record.spec.guest_os == "http://microsoft.com/win/2k19"
    assert test_driver.get_vm("test").spec.guest_os is None  # the driver's own VM: no metadata
