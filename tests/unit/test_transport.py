"""An encrypted migration stream: when vmferry asks for one, and the setting that decides."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.cli import vmferry as run_vmferry

from vmferry.assess.transport import tls_decision
from vmferry.model import Severity
from vmferry.model.migration import MigrationOptions, Strategy, TlsMode
from vmferry.store import Store


@pytest.mark.parametrize(
    ("mode", "src", "dst", "encrypt", "severity"),
    [
        (TlsMode.REQUIRED, True, True, True, None),
        (TlsMode.REQUIRED, True, False, False, Severity.BLOCKER),
        (TlsMode.REQUIRED, False, False, False, Severity.BLOCKER),
        (TlsMode.PREFERRED, True, True, True, None),
        (TlsMode.PREFERRED, False, True, False, Severity.INFO),
        (TlsMode.OFF, True, True, False, None),
        (TlsMode.OFF, False, False, False, None),
    ],
)
def test_both_hosts_need_certificates_and_the_mode_decides_what_lacking_them_means(
    mode: TlsMode, src: bool, dst: bool, encrypt: bool, severity: Severity | None
) -> None:
    use, finding = tls_decision(mode, "kvm1", src, "kvm2", dst)
    assert use is encrypt
    assert (finding.severity if finding else None) is severity
    if finding is not None:
        assert finding.id == "migration.tls-unavailable"
        lacking = [n for n, has in (("kvm1", src), ("kvm2", dst)) if not has]
        assert all(name in finding.message for name in lacking)
        assert "--migration-tls" in finding.remediation


def test_a_jobs_tls_mode_is_kept(store: Store) -> None:
    options = MigrationOptions(Strategy.LIVE, tls=TlsMode.REQUIRED)
    job = store.create_job("migrate", "web1", "kvm1", "kvm2", options)
    again = store.get_job(job.id).options
    assert again.tls is TlsMode.REQUIRED and type(again.tls) is TlsMode


def _vmferry(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_vmferry(*args, db=db)


def test_the_migration_tls_setting_is_set_listed_and_unset(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    def listed() -> dict[str, dict[str, object]]:
        doc = json.loads(_vmferry(db, "settings", "list", "--json").stdout)
        return {s["key"]: s for s in doc}

    before = listed()
    assert list(before) == sorted(before)
    tls = before["migration.tls"]
    assert (tls["value"], tls["changed"], tls["takes"]) == (
        "preferred",
        False,
        "required | preferred | off",
    )
    done = _vmferry(db, "settings", "set", "migration.tls", "required", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["value"] == "required"
    assert listed()["migration.tls"]["changed"] is True
    for bad, words in ((("migration.tls", "sometimes"), "takes required | preferred | off"),
                       (("migration.speed", "fast"), "no setting 'migration.speed'"),
                       (("jobs.owner_lease_s", "2"), "takes a whole number from 3 to 600"),
                       (("jobs.owner_lease_s", "1e3"), "not '1e3'")):  # fmt: skip
        refused = _vmferry(db, "settings", "set", *bad)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert listed()["migration.tls"]["value"] == "required"
    assert listed()["jobs.owner_lease_s"]["value"] == "15"
    back = _vmferry(db, "settings", "unset", "migration.tls", "--json")
    assert json.loads(back.stdout)["value"] == "preferred"
