"""A Redfish BMC (sushy-emulator) for the power-driver and HA tests of this package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.redfish_bmc import Bmc, redfish_bmc


@pytest.fixture(scope="module")
def bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bmc]:
    """A BMC whose one system is on; stopped after the module."""
    with redfish_bmc(tmp_path_factory.mktemp("bmc")) as running:
        yield running
