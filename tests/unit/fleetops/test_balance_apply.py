"""`vmferry balance --apply` over libvirt's test driver, where the fleet has nothing to move:
it says so, moves nothing and makes no plan (the moves themselves run in the lab:
tests/lab/test_fleet_lab.py)."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import vmferry

from vmferry.store.db import open_store


def test_apply_on_a_balanced_fleet_moves_nothing_and_makes_no_plan(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    assert vmferry("hosts", "add", "t1", "test:///default", db=db).returncode == 0
    done = vmferry("balance", "--apply", "--json", db=db)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["moves"], doc["plan_id"], doc["plan_status"]) == ([], None, None)
    assert done.stderr.startswith("nothing to apply: the fleet is ")
    with open_store(f"sqlite:///{db}") as store:
        assert store.list_plans() == []


def test_without_apply_the_json_says_no_plan_ran(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    assert vmferry("hosts", "add", "t1", "test:///default", db=db).returncode == 0
    doc = json.loads(vmferry("balance", "--json", db=db).stdout)
    assert (doc["plan_id"], doc["plan_status"]) == (None, None)
