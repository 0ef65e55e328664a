"""`vmferry consolidate` (cli/consolidate_cmd.py, service/consolidate.py): the fleet read as
`balance` reads it (faked here), the JSON, the table, the plan file, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import vmferry
from typer.testing import CliRunner

from vmferry.cli.main import build_app
from vmferry.errors import BadInputError
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.plan import load_plan
from vmferry.service import consolidate as service

GIB = 2**30
HOSTS = [HostLoad("kvm1", 10, 100 * GIB, "Skylake"), HostLoad("kvm2", 10, 100 * GIB, "Skylake"),
         HostLoad("kvm3", 10, 100 * GIB, "Skylake"),
         HostLoad("kvm4", 10, 100 * GIB, "Skylake", in_maintenance=True)]  # fmt: skip
VMS = [VmLoad("web1", "kvm1", 4, 4 * GIB, 1.0, 2 * GIB),
       VmLoad("db1", "kvm2", 4, 8 * GIB, 2.0, 4 * GIB, anti_affinity="db"),
       VmLoad("db2", "kvm3", 4, 8 * GIB, 2.0, 4 * GIB, anti_affinity="db"),
       VmLoad("app1", "kvm3", 4, 4 * GIB, 2.0, 2 * GIB)]  # fmt: skip
ABOVE = "above the 63% target"
KEYS = ["hosts_freed", "moves", "utilisation_after", "kept", "metric", "headroom", "target",
        "tolerance", "at_least_kept", "counted_at_size", "unreachable"]  # fmt: skip


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The service reads this fleet instead of the hosts and the store."""
    seen: dict[str, object] = {}

    def gather(store: object) -> tuple[list[HostLoad], list[VmLoad], list[str],
                                       dict[str, str], float]:  # fmt: skip
        seen["store"] = store
        return list(HOSTS), list(VMS), ["web1"], {"kvm9": "timed out"}, 1.25e8

    monkeypatch.setattr(service, "gather_loads", gather)
    monkeypatch.setattr(service, "open_store", lambda: "the store")
    return seen


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(build_app("consolidate"), ["consolidate", *args])
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return done.exit_code, done.stdout


def test_json_is_the_documented_document(fleet: dict[str, object]) -> None:
    code, out = run("--json", "--metric", "cpu")
    assert code == 0, out
    doc = json.loads(out)
    assert list(doc) == KEYS
    assert doc["hosts_freed"] == ["kvm1"]
    assert doc["moves"] == [{"vm": "web1", "source": "kvm1", "destination": "kvm3",
                             "bytes": doc["moves"][0]["bytes"]}]  # fmt: skip
    assert doc["moves"][0]["bytes"] > 0
    assert doc["utilisation_after"] == {"kvm2": 0.2, "kvm3": 0.5}
    assert doc["kept"] == [
        {
            "host": "kvm2",
            "why": "freeing it lifts the hosts that stay to 70%, above the 63% target",
        },
        {"host": "kvm3", "why": "takes VMs from kvm1"},
        {"host": "kvm4", "why": "in maintenance: `vmferry host maintenance` empties it"},
    ]
    assert (doc["metric"], doc["headroom"], doc["target"], doc["tolerance"]) == (
        "cpu", 20, 0.63, 0.18)  # fmt: skip
    assert (doc["counted_at_size"], doc["unreachable"]) == (["web1"], {"kvm9": "timed out"})
    assert fleet["store"] == "the store"
    wider = json.loads(run("--json", "--metric", "cpu", "--target", "85", "--tolerance", "10")[1])
    assert wider["kept"][0] == {
        "host": "kvm2",
        "why": "db1: each host with its CPU and room holds one of db",
    }


def test_the_options_reach_the_planner(fleet: dict[str, object]) -> None:
    doc = json.loads(run("--json", "--metric", "cpu", "--max-moves", "0")[1])
    assert (doc["hosts_freed"], doc["moves"]) == ([], [])
    assert {"host": "kvm1", "why": "emptying it takes 1 moves, over --max-moves 0 (0 chosen)"} in (
        doc["kept"])  # fmt: skip
    low = json.loads(run("--json", "--metric", "cpu", "--target", "20", "--tolerance", "5")[1])
    assert low["hosts_freed"] == [] and low["target"] == 0.2
    assert low["kept"][0]["why"] == ("freeing it lifts the hosts that stay to 35%, above the "
                                     "20% target")  # fmt: skip


def test_the_table_names_the_freed_hosts_the_moves_and_why_others_stay(
    fleet: dict[str, object],
) -> None:
    code, out = run("--metric", "cpu")
    assert code == 0
    assert out.startswith("1 of 3 hosts can be freed with 1 moves (cpu; at least 2 must stay): "
                          "kvm1")  # fmt: skip
    for words in ("web1", "takes VMs from kvm1", "in maintenance", "50%"):
        assert words in out


def test_plan_out_writes_a_plan_file_the_planner_takes(
    fleet: dict[str, object], tmp_path: Path
) -> None:
    path = tmp_path / "consolidate.yaml"
    code, _ = run("--metric", "cpu", "--plan-out", str(path))
    assert code == 0
    spec = load_plan(path)
    assert spec.name == "consolidate"
    assert [(v.name, v.source, v.destination, v.strategy) for v in spec.vms] == [
        ("web1", "kvm1", "kvm3", "live")]  # fmt: skip
    assert spec.defaults.link_gbps == 1.0
    with pytest.raises(BadInputError, match="no moves to write"):
        run("--metric", "cpu", "--max-moves", "0", "--plan-out", str(tmp_path / "none.yaml"))
    assert not (tmp_path / "none.yaml").exists()


def test_no_host_answering_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "gather_loads", lambda store: ([], [], [], {"k": "x"}, 1e9))
    with pytest.raises(BadInputError, match="no registered host answered"):
        service.consolidate_fleet(store="s")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--headroom", "95"], "vmferry: --headroom must be in 0-90 % (got 95)"),
        (["--headroom", "-1"], "vmferry: --headroom must be in 0-90 % (got -1)"),
        (["--metric", "disk"], "vmferry: unknown metric 'disk': use one of cpu, memory, both"),
        (["--max-moves", "-2"], "vmferry: --max-moves must be >= 0 (got -2)"),
        (["--target", "90", "--tolerance", "20"],
         "vmferry: tolerance must keep target +/- tolerance within [0, 1] (got 0.9 +/- 0.2)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], line: str, tmp_path: Path) -> None:
    done = vmferry("consolidate", *args, db=tmp_path / "x.db")
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, line, "")


def test_consolidate_reads_a_real_libvirt(tmp_path: Path) -> None:
    """libvirt's test driver: one host, its VM counted at its size; one host stays."""
    db = tmp_path / "x.db"
    assert vmferry("hosts", "add", "t1", "test:///default", db=db).returncode == 0
    done = vmferry("consolidate", "--json", db=db)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["hosts_freed"], doc["moves"], doc["counted_at_size"]) == ([], [], ["test"])
    assert doc["kept"] == [{"host": "t1", "why": "at least 1 host(s) stay powered"}]
    assert list(doc["utilisation_after"]) == ["t1"]


def test_apply_with_nothing_to_free_and_power_off_alone_are_refused(tmp_path: Path) -> None:
    """Over libvirt's test driver (one host: nothing can be freed): `--apply` says so and
    moves nothing; `--power-off` without `--apply`, and waking a host that is not in
    standby, are bad input."""
    db = tmp_path / "x.db"
    assert vmferry("hosts", "add", "t1", "test:///default", db=db).returncode == 0
    applied = vmferry("consolidate", "--apply", "--json", db=db)
    assert (applied.returncode, applied.stderr.strip(), applied.stdout) == (
        2, "vmferry: nothing to apply: no host can be freed", "")  # fmt: skip
    alone = vmferry("consolidate", "--power-off", db=db)
    assert (alone.returncode, alone.stderr.strip()) == (2, "vmferry: --power-off needs --apply")
    awake = vmferry("host", "wake", "t1", db=db)
    assert awake.returncode == 2
    assert awake.stderr.strip() == ("vmferry: t1 is not in standby; `vmferry host maintenance "
                                    "status`")  # fmt: skip
    held = json.loads(vmferry("host", "maintenance", "status", "--json", db=db).stdout)
    assert held == []  # nothing was marked
