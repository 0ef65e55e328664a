"""Guest OS identifiers from VMX, vSphere osType and CIM numbers."""

from __future__ import annotations

import pytest

from vmferry.sources.guest_os import from_ovf, from_vmware_id


@pytest.mark.parametrize(
    ("guest_id", "family", "distro", "version", "bits"),
    [
        ("debian12-64", "linux", "debian", "12", 64),
        ("debian12_64Guest", "linux", "debian", "12", 64),
        ("ubuntu-64", "linux", "ubuntu", "", 64),
        ("ubuntu64Guest", "linux", "ubuntu", "", 64),
        ("rhel9_64Guest", "linux", "rhel", "9", 64),
        ("centos7-64", "linux", "centos", "7", 64),
        ("sles15-64", "linux", "sles", "15", 64),
        ("other5xlinux-64", "linux", "", "5.x", 64),
        ("windows2019srv-64", "windows", "", "2019", 64),
        ("windows2019srvNext-64", "windows", "", "2022", 64),
        ("windows9Server64Guest", "windows", "", "2016", 64),
        ("windows9-64", "windows", "", "10", 64),
        ("windows11_64Guest", "windows", "", "11", 64),
        ("winXPPro", "windows", "", "xp", 32),
        ("freebsd13-64", "other", "freebsd", "13", 64),
        ("otherGuest64", "other", "", "", 64),
        ("plan9", "unknown", "", "", 32),
    ],
)
def test_vmware_ids(guest_id: str, family: str, distro: str, version: str, bits: int) -> None:
    guest = from_vmware_id(guest_id)
    assert (guest.family, guest.distro, guest.version, guest.bits) == (
        family,
        distro,
        version,
        bits,
    )
    assert guest.id == guest_id


def test_ovf_cim_numbers_and_os_type() -> None:
    debian = from_ovf("96", None, "12")
    assert (debian.family, debian.distro, debian.version, debian.id) == (
        "linux",
        "debian",
        "12",
        "96",
    )
    win = from_ovf("121", None)
    assert (win.family, win.version) == ("windows", "2019")
    kernel = from_ovf("100", None)
    assert (kernel.family, kernel.version, kernel.bits) == ("linux", "2.6.x", 64)
    precise = from_ovf("101", "rhel8_64Guest")
    assert (precise.distro, precise.version) == ("rhel", "8")
    assert from_ovf(None, None).family == "unknown"
