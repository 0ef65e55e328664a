"""The redfish power driver against a Redfish BMC (sushy-emulator, tests/support/redfish_bmc.py)
over HTTPS with basic authentication: status, a forced power-off confirmed off, power-on;
refusals in one line (wrong password, untrusted certificate, missing variable); the driver
recorded with `vmferry host power set --redfish` and used by the HA monitor to fence."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from support.cli import vmferry
from support.redfish_bmc import ENV, PASSWORD, USER, Bmc

from vmferry.drivers.power_command import power_off, power_on, power_status
from vmferry.errors import BadInputError, ToolError
from vmferry.model.ha import HostPower, power_problem


@pytest.fixture
def driver(bmc: Bmc, monkeypatch: pytest.MonkeyPatch) -> HostPower:
    monkeypatch.setenv(ENV, PASSWORD)
    return HostPower("kvm1", timeout_s=10, driver="redfish", url=bmc.url, user=USER,
                     password_env=ENV, ca=str(bmc.ca))  # fmt: skip


def _until(driver: HostPower, state: str, within_s: float = 20) -> float:
    began = time.monotonic()
    while power_status(driver) != state:
        assert time.monotonic() - began < within_s, f"not {state} within {within_s:g} s"
        time.sleep(0.5)
    return time.monotonic() - began


def test_status_off_and_on_through_the_bmc(driver: HostPower) -> None:
    assert power_status(driver) == "on"
    power_off(driver)  # ForceOff: the BMC applies it a few seconds later
    print(f"off confirmed after {_until(driver, 'off'):.1f} s")
    power_on(driver)
    print(f"on confirmed after {_until(driver, 'on'):.1f} s")


def test_refusals_are_one_line(driver: HostPower, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "wrong")
    with pytest.raises(ToolError, match=r"answered HTTP 401 to GET /redfish/v1/Systems/"):
        power_status(driver)
    monkeypatch.setenv(ENV, PASSWORD)
    with pytest.raises(
        ToolError, match=r"could not be asked to say its power state: .*CERTIFICATE"
    ):
        power_status(replace(driver, ca=None))  # the system's trust store knows no test CA
    assert power_status(replace(driver, ca=None, insecure=True)) in ("on", "off")
    monkeypatch.delenv(ENV)
    with pytest.raises(ToolError, match=rf"password is not in \${ENV}"):
        power_status(driver)
    with pytest.raises(ToolError, match="answered HTTP 404"):
        monkeypatch.setenv(ENV, PASSWORD)
        power_status(replace(driver, url=driver.url.rsplit("/", 1)[0] + "/nope"))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "words"),
    [({"url": "http://bmc/redfish/v1/Systems/1"}, "reached over https://"),
     ({"user": None}, "needs --user"), ({"password_env": "not a var"}, "--password-env VAR"),
     ({"insecure": True}, "--ca FILE or --insecure, not both"),
     ({"off_command": "ipmitool"}, "not both"), ({"driver": "ipmi"}, "command or redfish")],
)  # fmt: skip
def test_bad_drivers_are_refused(driver: HostPower, changes: dict[str, object], words: str) -> None:
    assert power_problem(driver) is None
    why = power_problem(replace(driver, **changes))  # type: ignore[arg-type]
    assert why is not None and words in why
    assert power_problem(HostPower("h", "on", "", "st")) == (
        "the command driver needs --off (or --redfish URL for a BMC's Redfish API)")  # fmt: skip


def test_set_records_it_and_status_asks_the_bmc(
    bmc: Bmc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "x.db"
    monkeypatch.setenv(ENV, PASSWORD)
    assert vmferry("hosts", "add", "kvm1", "test:///default", db=db).returncode == 0
    bad = vmferry("host", "power", "set", "kvm1", "--redfish", bmc.url.replace("https", "http"),
                  "--user", USER, "--password-env", ENV, db=db)  # fmt: skip
    assert bad.returncode == 2 and "reached over https://" in bad.stderr
    assert bad.stderr.count("\n") == 1
    done = vmferry("host", "power", "set", "kvm1", "--redfish", bmc.url, "--user", USER,
                   "--password-env", ENV, "--ca", str(bmc.ca), db=db)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kvm1: power driver recorded (redfish {bmc.url} as {USER})"
    assert PASSWORD not in db.read_bytes().decode("latin-1")  # never stored
    asked = vmferry("host", "power", "status", "kvm1", db=db)
    assert asked.returncode == 0 and asked.stdout.strip() in ("on", "off"), asked.stderr


def test_power_problem_is_what_set_refuses() -> None:
    from vmferry.service.ha import set_power

    with pytest.raises(BadInputError, match="needs --on, --off, --status"):
        set_power(HostPower("kvm1"))
