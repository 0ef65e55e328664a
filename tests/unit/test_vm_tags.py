"""`vmferry vm tag`: a VM's tags shown, replaced and cleared in the store; a bad tag is one
line, exit 2, nothing written; placement reads the anti-affinity group from them."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import vmferry

from vmferry.fleetops.loads import anti_affinity_group
from vmferry.store import accounts, open_store


def test_tags_are_replaced_shown_and_cleared(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    done = vmferry("vm", "tag", "web1", "project:a", "anti-affinity:web", "project:a", db=db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "web1: anti-affinity:web project:a"  # sorted, once each
    shown = json.loads(vmferry("vm", "tag", "web1", "--json", db=db).stdout)
    assert shown == {"vm": "web1", "tags": ["anti-affinity:web", "project:a"]}
    tags = accounts.tags_of(open_store(f"sqlite:///{db}"), "web1")
    assert anti_affinity_group(tags) == "web"
    bad = vmferry("vm", "tag", "web1", "fine", "not fine", db=db)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'not fine'" in bad.stderr
    assert vmferry("vm", "tag", "web1", db=db).stdout.strip() == "web1: anti-affinity:web project:a"
    both = vmferry("vm", "tag", "web1", "x", "--clear", db=db)
    assert both.returncode == 2 and "not both" in both.stderr
    assert vmferry("vm", "tag", "web1", "--clear", db=db).stdout.strip() == "web1: no tags"
