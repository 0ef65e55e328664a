"""A host record's shell: which forms vmferry takes, and what each runs commands under."""

from __future__ import annotations

import sys

import pytest

from vmferry.drivers.host_exec import HostExec, parse_shell
from vmferry.errors import BadInputError


def test_the_forms_a_shell_takes() -> None:
    assert parse_shell("local") == ()
    assert parse_shell("netns:vmf-kvm1") == ("ip", "netns", "exec", "vmf-kvm1")
    assert HostExec.for_shell("h", None) is None


@pytest.mark.parametrize("bad", ["", "netns:", "netns:a b", "ssh", "netns:x;rm -rf /", "LOCAL"])
def test_a_shell_vmferry_does_not_know_is_one_line_of_bad_input(bad: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_shell(bad)
    assert "\n" not in caught.value.message and "local or netns:NAME" in caught.value.message


def test_a_local_shell_runs_the_command_here() -> None:
    hexec = HostExec.for_shell("here", "local")
    assert hexec is not None
    done = hexec.run([sys.executable, "-c", "print('ran here')"])
    assert done.stdout.strip() == "ran here"
