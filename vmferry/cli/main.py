"""The `vmferry` command."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from vmferry import __version__
from vmferry.cli import (
    check_cmd,
    demo_cmd,
    hosts_cmd,
    import_cmd,
    jobs_cmd,
    lab_cmd,
    migrate_cmd,
    netprofile_cmd,
    plan_cmd,
    predict_cmd,
    profile_cmd,
    settings_cmd,
    vm_cmd,
)
from vmferry.errors import VmferryError

app = typer.Typer(
    name="vmferry",
    help="Move virtual machines into and between KVM hosts: check, plan, migrate, verify.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(lab_cmd.app, name="lab")
app.add_typer(hosts_cmd.app, name="hosts")
app.command("inventory")(hosts_cmd.inventory)
app.command("demo")(demo_cmd.demo)
app.command("check")(check_cmd.check)
app.command("jobs")(jobs_cmd.jobs)
app.add_typer(jobs_cmd.job_app, name="job")
app.command("migrate")(migrate_cmd.migrate)
app.add_typer(plan_cmd.app, name="plan")
app.command("import")(import_cmd.import_command)
app.add_typer(netprofile_cmd.app, name="netprofile")
app.command("profile")(profile_cmd.profile)
app.command("predict")(predict_cmd.predict)
app.add_typer(settings_cmd.app, name="settings")
app.add_typer(vm_cmd.app, name="vm")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vmferry {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """vmferry moves VMs and proves nothing was lost."""


def run(argv: list[str] | None = None) -> None:
    """Entry point: Typer handles usage errors (exit 2) and Ctrl-C (exit 130); vmferry's own
    errors become one line on stderr and their exit code; anything else exit 1, no traceback
    unless VMFERRY_DEBUG is set."""
    try:
        app(args=argv)
    except VmferryError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("VMFERRY_DEBUG"):
            traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc} (VMFERRY_DEBUG=1 shows details)", 1)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"vmferry: {message}\n")
    sys.exit(code)


if __name__ == "__main__":
    run()
