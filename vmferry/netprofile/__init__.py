"""Port profiles, pure parts: libvirt XML <-> profiles, nftables rendering, FDB verdicts.

The side effects (nft, bridge, libvirt network updates) are in :mod:`vmferry.drivers.nft`,
:mod:`vmferry.drivers.bridge` and :mod:`vmferry.service.netprofile`; the pre-flight rules in
:mod:`vmferry.assess.network`.
"""
