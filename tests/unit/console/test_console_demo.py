"""`vmferry demo --console`: the demo user and its password, printed before the console is
served, log in; run again, the demo gets a new password and the old one stops working."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmferry.cli import demo_cmd, server_cmd
from vmferry.console.session import check_password
from vmferry.store.db import Store, open_store


def test_demo_login_gives_a_working_password_and_rotates_it(sqlite_store: Store) -> None:
    name, first = demo_cmd.demo_login(sqlite_store)
    user = check_password(sqlite_store, name, first)
    assert user is not None and user.role.value == "operator" and user.project is None
    again, second = demo_cmd.demo_login(sqlite_store)
    assert again == name and second != first
    assert check_password(sqlite_store, name, first) is None
    assert check_password(sqlite_store, name, second) is not None


def test_serve_console_prints_the_url_and_login_then_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VMFERRY_DB", f"sqlite:///{tmp_path / 'vmferry.db'}")
    served: list[str] = []
    monkeypatch.setattr(server_cmd, "server", lambda **kw: served.append(kw["listen"]))
    demo_cmd.serve_console("127.0.0.1:8471")
    shown = capsys.readouterr().out
    assert served == ["127.0.0.1:8471"]
    assert "http://127.0.0.1:8471/" in shown and "demo" in shown
    password = shown.split("password")[1].split()[0]
    with open_store() as store:
        assert check_password(store, "demo", password) is not None
