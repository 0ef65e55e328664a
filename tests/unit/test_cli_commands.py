"""The command line loads only the command it runs (`vmferry import` started in less time
than a whole `qemu-img convert` of the import benchmark's disk took otherwise)."""

from __future__ import annotations

import subprocess
import sys

from vmferry.cli import main


def test_every_command_is_registered_in_the_help_order() -> None:
    app = main.build_app()
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert sorted(n for n in names if n) == sorted(main._COMMANDS)


def test_a_command_loads_its_own_module_only() -> None:
    code = (
        "import sys\n"
        "from vmferry.cli import main\n"
        "main.build_app(main._command_named(['import', '--help']))\n"
        "print(sorted(m for m in sys.modules if m.startswith('vmferry.cli.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert (
        done.stdout.strip()
        == "['vmferry.cli.import_cmd', 'vmferry.cli.main', 'vmferry.cli.output']"
    )


def test_the_command_is_the_first_word_that_is_no_option() -> None:
    assert main._command_named(["--version"]) is None
    assert main._command_named(["import", "x.vmx", "--to", "kvm1"]) == "import"
    assert main._command_named(["nosuch"]) is None
