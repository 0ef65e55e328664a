"""Guest OS identifiers -> ``GuestOs`` (family, version, bits).

Three vocabularies: the VMX ``guestOS`` key (``debian12-64``, ``windows2019srv-64``),
vSphere's ``vmw:osType`` in OVF (``debian12_64Guest``, ``windows2019srv_64Guest``), which is
brought to the VMX form first, and the CIM OS type numbers of OVF's OperatingSystemSection.
"""

from __future__ import annotations

import re

from vmferry.model.source_vm import GuestOs

# Linux distributions by VMware id prefix (the version is the digits that follow).
_LINUX_PREFIXES = (
    "debian",
    "ubuntu",
    "rhel",
    "centos",
    "oraclelinux",
    "oracle",
    "sles",
    "opensuse",
    "suse",
    "fedora",
    "rockylinux",
    "almalinux",
    "amazonlinux",
    "photon",
    "coreos",
    "asianux",
    "mandriva",
    "mandrake",
    "turbolinux",
    "redhat",
    "nld",
    "miraclelinux",
    "prolinux",
    "kylinlinux",
    "crxpod",
    "crxsys",
)

# VMware Windows ids (without the -64 suffix, lowercase) -> product version.
_WINDOWS_VERSIONS = {
    "windows2022srvnext": "2025",
    "windows2019srvnext": "2022",
    "windows2019srv": "2019",
    "windows9srv": "2016",
    "windows8srv": "2012",
    "windows7srv": "2008r2",
    "winlonghorn": "2008",
    "winnetenterprise": "2003",
    "winnetstandard": "2003",
    "winnetdatacenter": "2003",
    "winnetweb": "2003",
    "winnetbusiness": "2003",
    "windows12": "12",
    "windows11": "11",
    "windows9": "10",
    "windows8": "8",
    "windows7": "7",
    "winvista": "vista",
    "winxppro": "xp",
    "winxphome": "xp",
    "win2000pro": "2000",
    "win2000serv": "2000",
    "win2000advserv": "2000",
    "winnt": "nt",
    "win98": "98",
    "win95": "95",
}

_OTHER_PREFIXES = (
    "freebsd",
    "solaris",
    "darwin",
    "netware",
    "os2",
    "dos",
    "vmkernel",
    "ecomstation",
)


def from_vmware_id(guest_id: str) -> GuestOs:
    """``GuestOs`` for a VMX ``guestOS`` value or a vSphere ``osType``."""
    original = guest_id.strip()
    lowered = _vsphere_to_vmx(original).lower()
    bits = 64 if lowered.endswith("64") else 32
    base = re.sub(r"-?64$", "", lowered)
    if not base:
        return GuestOs(family="unknown", id=original, bits=bits)
    if base.startswith("win"):
        return GuestOs("windows", original, _WINDOWS_VERSIONS.get(base, ""), bits)
    if "linux" in base and base.startswith("other"):
        match = re.match(r"other(\d+)xlinux", base)
        return GuestOs("linux", original, f"{match.group(1)}.x" if match else "", bits)
    for family, prefixes in (("linux", _LINUX_PREFIXES), ("other", _OTHER_PREFIXES)):
        for prefix in prefixes:
            if base.startswith(prefix):
                digits = re.match(r"(\d+)", base[len(prefix) :])
                version = digits.group(1) if digits else ""
                return GuestOs(family, original, version, bits, distro=_DISTRO.get(prefix, prefix))
    if base.startswith("other"):
        return GuestOs("other", original, "", bits)
    return GuestOs("unknown", original, "", bits)


_DISTRO = {"oracle": "oraclelinux", "redhat": "rhel", "mandrake": "mandriva"}


def _vsphere_to_vmx(os_type: str) -> str:
    """``debian12_64Guest`` -> ``debian12-64``; ``ubuntu64Guest`` -> ``ubuntu-64``;
    ``windows9Server64Guest`` -> ``windows9srv-64``; ``otherGuest64`` -> ``other-64``;
    a VMX id comes back as it is."""
    text = os_type
    if text.endswith("Guest64"):
        text = text[: -len("Guest64")] + "-64"
    elif text.endswith("Guest"):
        text = text[: -len("Guest")]
        if text.endswith("_64"):
            text = text[:-3] + "-64"
        elif text.endswith("64"):
            text = text[:-2] + "-64"
    return text.replace("Server", "srv")


# CIM_OperatingSystem.OSType values used in OVF's OperatingSystemSection ovf:id.
_CIM_OS: dict[int, tuple[str, str, int]] = {
    1: ("other", "", 32),
    36: ("linux", "", 32),
    42: ("other", "freebsd", 32),
    58: ("windows", "2000", 32),
    67: ("windows", "xp", 32),
    69: ("windows", "2003", 32),
    70: ("windows", "2003", 64),
    71: ("windows", "xp", 64),
    73: ("windows", "vista", 32),
    74: ("windows", "vista", 64),
    76: ("windows", "2008", 32),
    77: ("windows", "2008", 64),
    78: ("other", "freebsd", 64),
    79: ("linux", "rhel", 32),
    80: ("linux", "rhel", 64),
    82: ("linux", "suse", 32),
    83: ("linux", "suse", 64),
    84: ("linux", "sles", 32),
    85: ("linux", "sles", 64),
    93: ("linux", "ubuntu", 32),
    94: ("linux", "ubuntu", 64),
    95: ("linux", "debian", 32),
    96: ("linux", "debian", 64),
    97: ("linux", "2.4", 32),
    98: ("linux", "2.4", 64),
    99: ("linux", "2.6", 32),
    100: ("linux", "2.6", 64),
    101: ("linux", "", 64),
    102: ("other", "", 64),
    103: ("windows", "2008r2", 64),
    105: ("windows", "7", 64),
    106: ("linux", "centos", 32),
    107: ("linux", "centos", 64),
    108: ("linux", "oracle", 32),
    109: ("linux", "oracle", 64),
    112: ("windows", "2012", 64),
    113: ("windows", "8", 32),
    114: ("windows", "8", 64),
    115: ("windows", "2012r2", 64),
    116: ("windows", "2016", 64),
    117: ("windows", "8.1", 32),
    118: ("windows", "8.1", 64),
    119: ("windows", "10", 32),
    120: ("windows", "10", 64),
    121: ("windows", "2019", 64),
    122: ("windows", "11", 64),
    123: ("windows", "2022", 64),
}


def from_ovf(cim_id: str | None, os_type: str | None, version: str | None = None) -> GuestOs:
    """``GuestOs`` from an OVF OperatingSystemSection: ``vmw:osType`` when present (it is
    more precise), else the CIM number; ``ovf:version`` fills in a missing version."""
    if os_type:
        guest = from_vmware_id(os_type)
        if guest.family != "unknown":
            if version and not guest.version:
                return GuestOs(guest.family, guest.id, version, guest.bits, guest.distro)
            return guest
    if cim_id is None or not cim_id.strip().isdigit():
        return GuestOs(id=cim_id or os_type or "")
    family, detail, bits = _CIM_OS.get(int(cim_id), ("unknown", "", 64))
    if family == "windows":
        return GuestOs(family, cim_id.strip(), version or detail, bits)
    if detail[:1].isdigit():  # a kernel series (Linux 2.6.x)
        return GuestOs(family, cim_id.strip(), version or f"{detail}.x", bits)
    return GuestOs(family, cim_id.strip(), version or "", bits, distro=detail)
