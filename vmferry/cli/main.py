"""The `vmferry` command.

Each command's module is imported only when that command runs (``_COMMANDS``): importing
all of them took longer than a whole `qemu-img convert` of the import benchmark's disk
(docs/performance.md). Help without a command, and ``app``, load them all.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import traceback

import typer

from vmferry import __version__
from vmferry.errors import VmferryError

# name: (module, attribute, a group of subcommands or one command), in the order of the help
_COMMANDS: dict[str, tuple[str, str, bool]] = {
    "lab": ("vmferry.cli.lab_cmd", "app", True),
    "hosts": ("vmferry.cli.hosts_cmd", "app", True),
    "host": ("vmferry.cli.host_cmd", "app", True),
    "inventory": ("vmferry.cli.hosts_cmd", "inventory", False),
    "sources": ("vmferry.cli.sources_cmd", "app", True),
    "demo": ("vmferry.cli.demo_cmd", "demo", False),
    "check": ("vmferry.cli.check_cmd", "check", False),
    "jobs": ("vmferry.cli.jobs_cmd", "jobs", False),
    "job": ("vmferry.cli.jobs_cmd", "job_app", True),
    "migrate": ("vmferry.cli.migrate_cmd", "migrate", False),
    "move-storage": ("vmferry.cli.move_storage_cmd", "move_storage", False),
    "rollback": ("vmferry.cli.rollback_cmd", "rollback", False),
    "rehearse": ("vmferry.cli.rehearse_cmd", "rehearse", False),
    "backups": ("vmferry.cli.backups_cmd", "app", True),
    "balance": ("vmferry.cli.balance_cmd", "balance", False),
    "ha": ("vmferry.cli.ha_cmd", "app", True),
    "watch": ("vmferry.cli.ha_cmd", "watch", False),
    "consolidate": ("vmferry.cli.consolidate_cmd", "consolidate", False),
    "plan": ("vmferry.cli.plan_cmd", "app", True),
    "import": ("vmferry.cli.import_cmd", "import_command", False),
    "netprofile": ("vmferry.cli.netprofile_cmd", "app", True),
    "profile": ("vmferry.cli.profile_cmd", "profile", False),
    "predict": ("vmferry.cli.predict_cmd", "predict", False),
    "settings": ("vmferry.cli.settings_cmd", "app", True),
    "vm": ("vmferry.cli.vm_cmd", "app", True),
    "users": ("vmferry.cli.users_cmd", "app", True),
    "audit": ("vmferry.cli.audit_cmd", "audit", False),
    "server": ("vmferry.cli.server_cmd", "server", False),
    "hooks": ("vmferry.cli.hooks_cmd", "app", True),
    "projects": ("vmferry.cli.projects_cmd", "app", True),
    "worker": ("vmferry.cli.worker_cmd", "worker", False),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The command line with every command, or with ``only`` that one."""
    app = typer.Typer(
        name="vmferry",
        help="Move virtual machines into and between KVM hosts: check, plan, migrate, verify.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(main)
    for name, (module, attribute, group) in _COMMANDS.items():
        if only is not None and name != only:
            continue
        target = getattr(importlib.import_module(module), attribute)
        if group:
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def __getattr__(name: str) -> typer.Typer:
    """``vmferry.cli.main.app``: the whole command line (for tests and tools)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


def _command_named(args: list[str]) -> str | None:
    """The command ``args`` runs, when it is one of ours (the top level takes only flags)."""
    first = next((arg for arg in args if not arg.startswith("-")), None)
    return first if first in _COMMANDS else None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vmferry {__version__}")
        raise typer.Exit()


def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """vmferry moves VMs and proves nothing was lost."""


def entry() -> None:
    """The `vmferry` program (pyproject's script, ``python -m vmferry.cli.main``): ``run`` in a
    process of its own. What loading its command's modules creates (a few hundred thousand
    objects: classes, functions, SQLAlchemy's tables) lives until the process exits, so the
    collector is off while they load and they are frozen after (``gc.freeze``): no
    collection walks them again, the one at exit included. That took 0.1 s off every
    command (docs/performance.md, Import)."""
    gc.disable()
    run(own_process=True)


def run(argv: list[str] | None = None, *, own_process: bool = False) -> None:
    """Run a command: Typer handles usage errors (exit 2) and Ctrl-C (exit 130); vmferry's
    own errors become one line on stderr and their exit code; anything else exit 1, no
    traceback unless VMFERRY_DEBUG is set. ``own_process``: called by ``entry``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if os.environ.get("VMFERRY_URL"):  # remote mode: a command without one is refused
            from vmferry.client.remote import gate

            gate(args, {name for name, (_m, _a, group) in _COMMANDS.items() if group})
        app = build_app(_command_named(args))
        if own_process:
            gc.freeze()
            gc.enable()
        app(args=args)
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
    entry()
