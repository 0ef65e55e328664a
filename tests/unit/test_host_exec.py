"""A host record's shell: which forms vmferry takes, and what each runs commands under."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmferry.drivers.host_exec import HostExec, parse_shell
from vmferry.errors import BadInputError, HostUnreachableError, ToolError


def test_the_forms_a_shell_takes() -> None:
    assert parse_shell("local") == ()
    assert parse_shell("netns:vmf-kvm1") == ("ip", "netns", "exec", "vmf-kvm1")
    assert HostExec.for_shell("h", None) is None


@pytest.mark.parametrize("bad", ["", "netns:", "netns:a b", "ssh", "netns:x;rm -rf /", "LOCAL"])
def test_a_shell_vmferry_does_not_know_is_one_line_of_bad_input(bad: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_shell(bad)
    assert (
        "\n" not in caught.value.message and "local, netns:NAME or ssh://" in caught.value.message
    )


def test_a_local_shell_runs_the_command_here() -> None:
    hexec = HostExec.for_shell("here", "local")
    assert hexec is not None
    done = hexec.run([sys.executable, "-c", "print('ran here')"])
    assert done.stdout.strip() == "ran here"


# -- over SSH, against a real sshd on loopback ----------------------------------------------


@dataclass
class Sshd:
    port: int
    key: Path
    known_hosts: Path
    host_key: Path
    process: subprocess.Popen[bytes]

    def shell(self, **query: str) -> str:
        params = {"keyfile": str(self.key), "known_hosts": str(self.known_hosts), **query}
        return f"ssh://root@127.0.0.1:{self.port}?" + "&".join(
            f"{k}={v}" for k, v in params.items()
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _start_sshd(tmp: Path, host_key: Path, port: int) -> subprocess.Popen[bytes]:
    config = tmp / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {tmp / "sshd.pid"}
AuthorizedKeysFile {tmp / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sshd
        except OSError:
            assert sshd.poll() is None, "sshd did not start"
            assert time.monotonic() < deadline, "sshd did not listen within 10 s"
            time.sleep(0.05)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if os.geteuid() != 0:
        pytest.fail("the SSH tests start an sshd as root; run them as make test does")
    key, host_key = tmp_path / "id", tmp_path / "host_key"
    _keygen(key)
    _keygen(host_key)
    (tmp_path / "authorized_keys").write_text((tmp_path / "id.pub").read_text())
    port = _free_port()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(tmp_path / 'host_key.pub').read_text()}")
    process = _start_sshd(tmp_path, host_key, port)
    try:
        yield Sshd(port, key, known, host_key, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_command_runs_over_ssh_with_its_arguments_and_input_intact(sshd: Sshd) -> None:
    hexec = HostExec.for_shell("kvm9", sshd.shell())
    assert hexec is not None and hexec.remote
    odd = "it's a $HOME; `x` * \\n"
    done = hexec.run(["sh", "-c", 'printf "%s|" "$1"; cat', "sh", odd], input_text="in")
    assert done.stdout == f"{odd}|in"
    with pytest.raises(ToolError, match=r"on kvm9 failed: .*no-such-file"):
        hexec.run(["ls", "/no-such-file"])
    assert hexec.run(["false"], check=False).returncode == 1


def test_an_unknown_or_changed_host_key_and_a_refused_key_are_one_line_each(
    sshd: Sshd, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unknown = HostExec.for_shell("kvm9", sshd.shell(known_hosts=str(empty)))
    assert unknown is not None
    with pytest.raises(HostUnreachableError) as caught:
        unknown.run(["true"])
    assert caught.value.message.startswith("host kvm9: the SSH host key of 127.0.0.1 is not in")
    assert "\n" not in caught.value.message

    other = tmp_path / "other_host_key"
    _keygen(other)
    changed_file = tmp_path / "changed_known_hosts"
    changed_file.write_text(
        f"[127.0.0.1]:{sshd.port} {(tmp_path / 'other_host_key.pub').read_text()}"
    )
    changed = HostExec.for_shell("kvm9", sshd.shell(known_hosts=str(changed_file)))
    assert changed is not None
    with pytest.raises(HostUnreachableError, match="changed since it was recorded in") as caught:
        changed.run(["true"])
    assert f"ssh-keygen -R 127.0.0.1 -f {changed_file}" in caught.value.message

    stranger = tmp_path / "stranger"
    _keygen(stranger)
    refused = HostExec.for_shell("kvm9", sshd.shell(keyfile=str(stranger)))
    assert refused is not None
    with pytest.raises(HostUnreachableError, match="refused vmferry's SSH key") as caught:
        refused.run(["true"])
    assert "authorized_keys" in caught.value.message and "\n" not in caught.value.message


def test_a_host_with_no_sshd_is_unreachable_in_one_line(tmp_path: Path) -> None:
    port = _free_port()
    hexec = HostExec.for_shell("kvm9", f"ssh://root@127.0.0.1:{port}?known_hosts={tmp_path}/k")
    assert hexec is not None
    with pytest.raises(HostUnreachableError) as caught:
        hexec.run(["true"])
    assert caught.value.message.startswith("host kvm9: cannot run commands over SSH at root@")
    assert "Connection refused" in caught.value.message


def test_ssh_shells_that_are_not_forms_vmferry_takes() -> None:
    bad_shells = (("ssh://", "names no host"), ("ssh://h?password=x", "it has password"),
                  ("ssh://h/path", "names no host"), ("ssh://h:99999", "out of range"))  # fmt: skip
    for bad, words in bad_shells:
        with pytest.raises(BadInputError, match=words) as caught:
            parse_shell(bad)
        assert "\n" not in caught.value.message
    prefix = parse_shell("ssh://admin@kvm1.example:2222?keyfile=/k&known_hosts=/kh")
    assert prefix[-2:] == ("--", "admin@kvm1.example")
    assert "StrictHostKeyChecking=yes" in prefix and "BatchMode=yes" in prefix
    assert prefix[prefix.index("-i") : prefix.index("-i") + 2] == ("-i", "/k")
    assert "UserKnownHostsFile=/kh" in prefix and "2222" in prefix
