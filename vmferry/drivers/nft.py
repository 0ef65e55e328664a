"""vmferry's nftables table on a host (``bridge vmferry``): read it, change it.

What the scripts say is decided in :mod:`vmferry.netprofile.nft` (pure); this module only
runs ``nft``.
"""

from __future__ import annotations

from vmferry.drivers.host_exec import HostExec
from vmferry.model.netprofile import PortProfile
from vmferry.netprofile import nft as rules


def read_state(host: HostExec) -> rules.NftState:
    done = host.run(["nft", "-j", "list", "table", rules.FAMILY, rules.TABLE], check=False)
    if done.returncode != 0:  # no table yet
        return rules.NftState()
    return rules.parse_state(done.stdout)


def apply_profile(host: HostExec, profile: PortProfile, macs: dict[str, str]) -> rules.NftState:
    """Make the profile's chain and bind ``macs`` (mac -> VM) to it, atomically; return what
    was there before (for the undo)."""
    before = read_state(host)
    host.run(["nft", "-f", "-"], input_text=rules.apply_script(before, profile, macs))
    return before


def remove(host: HostExec, macs: tuple[str, ...], profiles: tuple[str, ...]) -> bool:
    """Unbind ``macs`` and drop the unused chains of ``profiles``; True if anything changed."""
    script = rules.remove_script(read_state(host), macs, profiles)
    if not script:
        return False
    host.run(["nft", "-f", "-"], input_text=script)
    return True
