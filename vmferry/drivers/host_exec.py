"""Run a command on a host, for what libvirt does not do there (nft, tc, bridge reads).

A host's record says how (:attr:`vmferry.model.Host.shell`):

- ``local``: this machine;
- ``netns:NAME``: the network namespace NAME on this machine (``ip netns exec NAME``), for
  hosts that are namespaces;
- ``ssh://[USER@]HOST[:PORT][?keyfile=PATH&known_hosts=PATH]``: over SSH, as libvirt's
  ``qemu+ssh`` URIs name them (same parameter names). vmferry never answers a prompt
  (``BatchMode``) and never takes an unknown or changed host key (``StrictHostKeyChecking``):
  add the host's key to the known-hosts file first. One connection per shell value is kept open
  for a minute and shared by the commands (``ControlMaster``);
- ``None``: vmferry runs nothing on the host, and the callers leave the job to libvirt or
  report it as not checked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from vmferry.drivers.process import run_tool
from vmferry.errors import BadInputError, HostUnreachableError, ToolError

_NETNS = re.compile(r"netns:([A-Za-z0-9_.-]{1,64})")
SHELL_FORMS = "local, netns:NAME or ssh://[USER@]HOST[:PORT][?keyfile=PATH&known_hosts=PATH]"
SSH_EXIT = 255  # ssh's own failure (the remote command's status otherwise)


@dataclass(frozen=True)
class HostExec:
    host: str
    prefix: tuple[str, ...]  # what the command's argv is run under
    remote: bool = False  # over ssh: the argv goes as one quoted command line

    @classmethod
    def for_namespace(cls, host: str, netns: str) -> HostExec:
        return cls(host, ("ip", "netns", "exec", netns))

    @classmethod
    def for_shell(cls, host: str, shell: str | None) -> HostExec | None:
        """The executor a host record's ``shell`` names, or None for no shell."""
        if shell is None:
            return None
        prefix, remote = shell_command(shell)
        return cls(host, prefix, remote)

    def run(
        self,
        argv: Sequence[str],
        *,
        input_text: str | None = None,
        timeout_s: float = 30,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        if not self.remote:
            return run_tool([*self.prefix, *argv], input_text=input_text, timeout_s=timeout_s,
                            check=check)  # fmt: skip
        ensure_control_dir()
        try:
            done = run_tool([*self.prefix, shlex.join(argv)], input_text=input_text,
                            timeout_s=timeout_s, check=False)  # fmt: skip
        except ToolError as exc:
            raise HostUnreachableError(f"host {self.host}: ssh: {exc.message}", cause=exc) from exc
        if done.returncode == SSH_EXIT:
            raise HostUnreachableError(ssh_problem(self.host, self.prefix, done.stderr))
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            last = detail[-1] if detail else f"exit status {done.returncode}"
            raise ToolError(f"`{shlex.join(argv)}` on {self.host} failed: {last}")
        return done


def parse_shell(shell: str) -> tuple[str, ...]:
    """Pure: the argv prefix of a ``shell`` value; BadInputError (one line) if it has none."""
    return shell_command(shell)[0]


def shell_command(shell: str) -> tuple[tuple[str, ...], bool]:
    """Pure: the argv prefix of a ``shell`` value and whether it is remote (ssh)."""
    if shell == "local":
        return (), False
    match = _NETNS.fullmatch(shell)
    if match:
        return ("ip", "netns", "exec", match.group(1)), False
    if shell.startswith("ssh://"):
        return ssh_prefix(shell), True
    raise BadInputError(f"shell {shell!r} is not one vmferry knows: use {SHELL_FORMS}")


def ssh_prefix(shell: str) -> tuple[str, ...]:
    """Pure: the ssh command line of an ``ssh://`` shell."""
    parts = urlsplit(shell)
    try:
        port = parts.port
    except ValueError as exc:
        raise BadInputError(f"shell {shell!r}: {exc}") from exc
    query = parse_qs(parts.query)
    unknown = set(query) - {"keyfile", "known_hosts"}
    if not parts.hostname or parts.path not in ("", "/") or unknown:
        why = f"it has {', '.join(sorted(unknown))}" if unknown else "it names no host"
        raise BadInputError(f"shell {shell!r} is not an ssh shell vmferry takes ({why}): use "
                            "ssh://[USER@]HOST[:PORT][?keyfile=PATH&known_hosts=PATH]")  # fmt: skip
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={_control_path(shell)}",
            "-o", "ControlPersist=60", "-o", "LogLevel=ERROR"]  # fmt: skip
    if "keyfile" in query:
        argv += ["-o", "IdentitiesOnly=yes", "-i", query["keyfile"][-1]]
    if "known_hosts" in query:
        argv += ["-o", f"UserKnownHostsFile={query['known_hosts'][-1]}"]
    if port is not None:
        argv += ["-p", str(port)]
    target = parts.hostname if parts.username is None else f"{parts.username}@{parts.hostname}"
    return (*argv, "--", target)


def _control_path(shell: str) -> str:
    """One shared connection per shell value: another key or known-hosts file (or a host
    key that changed since) never rides on a connection opened with the first."""
    return f"{_control_dir()}/{hashlib.sha256(shell.encode()).hexdigest()[:20]}"


def _control_dir() -> str:
    """Where the shared connections' sockets live: a directory of this user's alone."""
    return str(Path(tempfile.gettempdir()) / f"vmferry-ssh-{os.getuid()}")


def ensure_control_dir() -> None:
    Path(_control_dir()).mkdir(mode=0o700, exist_ok=True)


def ssh_problem(host: str, prefix: Sequence[str], stderr: str) -> str:
    """Pure: one line saying why ssh could not run the command on ``host`` and what to fix."""
    text = " ".join(stderr.split())
    target = prefix[-1]
    known = next((a.split("=", 1)[1] for a in prefix if a.startswith("UserKnownHostsFile=")),
                 "~/.ssh/known_hosts")  # fmt: skip
    address = target.rsplit("@", 1)[-1]
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        if "HAS CHANGED" in text:
            return (f"host {host}: the SSH host key of {address} changed since it was recorded "
                    f"in {known}; if the host was reinstalled, check the new key and replace "
                    f"the old one (ssh-keygen -R {address} -f {known})")  # fmt: skip
        return (f"host {host}: the SSH host key of {address} is not in {known}; add it "
                f"(after checking it) with ssh-keyscan {address} >> {known}")  # fmt: skip
    if "Permission denied" in text:
        return (f"host {host}: {target} refused vmferry's SSH key ({text}); add its public key "
                "to that user's authorized_keys")  # fmt: skip
    return f"host {host}: cannot run commands over SSH at {target}: {text or 'ssh failed'}"
