"""Run a command on a host's own network stack.

A lab host is a network namespace on this machine, so its commands run through
``ip netns exec``. vmferry has no remote shell for production hosts yet: for them
:func:`HostExec.for_namespace` is not used, and the callers report "unverified" instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.drivers.process import run_tool


@dataclass(frozen=True)
class HostExec:
    host: str
    netns: str

    @classmethod
    def for_namespace(cls, host: str, netns: str) -> HostExec:
        return cls(host, netns)

    def run(
        self,
        argv: Sequence[str],
        *,
        input_text: str | None = None,
        timeout_s: float = 30,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(
            ["ip", "netns", "exec", self.netns, *argv],
            input_text=input_text,
            timeout_s=timeout_s,
            check=check,
        )
