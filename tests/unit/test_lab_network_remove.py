"""Lab down's link removal: a link gone between the look and the delete is not a problem."""

from __future__ import annotations

import subprocess

import pytest

from vmferry.lab import network
from vmferry.lab.state import LabState


def _refused(argv: list[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(argv, 1, "", 'Cannot find device "vmf-mgmt"')


def test_a_veth_that_went_away_by_itself_is_not_left_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks = iter([True, False])  # there at the look, gone when the delete failed
    monkeypatch.setattr(network, "existing_namespaces", set)
    monkeypatch.setattr(network, "link_exists", lambda name: next(looks))
    monkeypatch.setattr(network, "run_tool", _refused)
    assert network.remove(LabState(hosts=2, link_mbps=400, links=["vmf-mgmt"])) == []


def test_a_link_that_stays_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "existing_namespaces", set)
    monkeypatch.setattr(network, "link_exists", lambda name: True)
    monkeypatch.setattr(network, "run_tool", _refused)
    assert network.remove(LabState(hosts=2, link_mbps=400, links=["vmf-mgmt"])) == [
        'link vmf-mgmt: Cannot find device "vmf-mgmt"'
    ]
