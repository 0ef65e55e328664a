"""`vmferry check VM --to HOST`: pre-flight checks for a live migration."""

from __future__ import annotations

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.client.remote import remote_api
from vmferry.errors import BadInputError, BlockedError
from vmferry.model import Finding, Severity
from vmferry.service.check import CheckReport, check_migration

_STYLE = {Severity.BLOCKER: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


def check(
    vm: str = typer.Argument(..., help="The VM to move (looked for on every registered host)."),
    to: str = typer.Option(..., "--to", help="The registered host to move it to."),
    copy_storage: bool = typer.Option(
        False, "--copy-storage", help="Disks only the source sees will be copied along."
    ),
    to_pool: str | None = typer.Option(
        None, "--to-pool", help="With --copy-storage: the destination pool they go into."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check whether VM can move live to another host; exit 3 while a blocker stands.

    JSON: {"vm", "destination", "findings": [{"id", "severity", "message", "remediation"}],
    "blocked"}.
    """
    if to_pool is not None and not copy_storage:
        raise BadInputError("--to-pool names where copied disks go: give it with --copy-storage")
    api = remote_api()
    if api is not None:
        with api:
            doc = api.check(vm, to, copy_storage=copy_storage, to_pool=to_pool)
            # the report's text names the source host, which POST /checks does not answer
            source = "" if json_out else api.vm(doc["vm"]).host
        report = report_from_json(doc, source)
    else:
        report = check_migration(vm, to, copy_storage=copy_storage, to_pool=to_pool)
    if json_out:
        print_json(report_json(report))
    else:
        console.print(report_table(report))
        console.print(summary(report), highlight=False)
    if report.blocked:
        blockers = sum(f.severity is Severity.BLOCKER for f in report.findings)
        raise BlockedError(
            f"VM {report.vm!r} cannot move live to {report.destination}: {blockers} "
            f"blocker{'s' if blockers != 1 else ''} (see above)"
        )


def report_json(report: CheckReport) -> dict[str, object]:
    """The documented `vmferry check --json` document."""
    return {
        "vm": report.vm,
        "destination": report.destination,
        "findings": [
            {
                "id": f.id,
                "severity": f.severity.value,
                "message": f.message,
                "remediation": f.remediation,
            }
            for f in report.findings
        ],
        "blocked": report.blocked,
    }


def report_from_json(doc: dict[str, object], source: str) -> CheckReport:
    """The report of a `vmferry check --json` document (the server's answer), its VM on
    ``source``."""
    findings = doc["findings"]
    assert isinstance(findings, list)
    found = tuple(Finding(f["id"], Severity(f["severity"]), f["message"], f["remediation"])
                  for f in findings)  # fmt: skip
    return CheckReport(str(doc["vm"]), source, str(doc["destination"]), found,
                       bool(doc["blocked"]))  # fmt: skip


def report_table(report: CheckReport) -> Table:
    table = Table(title=f"{report.vm}: {report.source} -> {report.destination}")
    table.add_column("severity", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("what to do", ratio=2)
    for f in report.findings:
        style = _STYLE[f.severity]
        table.add_row(f"[{style}]{f.severity}[/{style}]", f.id, f.message, f.remediation or "-")
    return table


def summary(report: CheckReport) -> str:
    if report.blocked:
        return "[bold red]blocked[/bold red]: fix the blockers above, then check again"
    notes = " (mind the notes above)" if report.findings else "; nothing to note"
    return f"[green]ok[/green]: {report.vm} can move live to {report.destination}{notes}"
