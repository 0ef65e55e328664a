"""Run a command on a host, for what libvirt does not do there (nft, tc, bridge reads).

A host's record says how (:attr:`vmferry.model.Host.shell`):

- ``local``: this machine;
- ``netns:NAME``: the network namespace NAME on this machine (``ip netns exec NAME``), for
  hosts that are namespaces, as the lab's are;
- ``None``: vmferry runs nothing on the host, and the callers leave the job to libvirt or
  report it as not checked.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.drivers.process import run_tool
from vmferry.errors import BadInputError

_NETNS = re.compile(r"netns:([A-Za-z0-9_.-]{1,64})")
SHELL_FORMS = "local or netns:NAME"


@dataclass(frozen=True)
class HostExec:
    host: str
    prefix: tuple[str, ...]  # what the command's argv is run under

    @classmethod
    def for_namespace(cls, host: str, netns: str) -> HostExec:
        return cls(host, ("ip", "netns", "exec", netns))

    @classmethod
    def for_shell(cls, host: str, shell: str | None) -> HostExec | None:
        """The executor a host record's ``shell`` names, or None for no shell."""
        if shell is None:
            return None
        return cls(host, parse_shell(shell))

    def run(
        self,
        argv: Sequence[str],
        *,
        input_text: str | None = None,
        timeout_s: float = 30,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(
            [*self.prefix, *argv],
            input_text=input_text,
            timeout_s=timeout_s,
            check=check,
        )


def parse_shell(shell: str) -> tuple[str, ...]:
    """Pure: the argv prefix of a ``shell`` value; BadInputError (one line) if it has none."""
    if shell == "local":
        return ()
    match = _NETNS.fullmatch(shell)
    if match:
        return ("ip", "netns", "exec", match.group(1))
    raise BadInputError(f"shell {shell!r} is not one vmferry knows: use {SHELL_FORMS}")
