"""`vmferry settings ...`: read and change vmferry's settings (kept in the store)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmferry.errors import BadInputError
from vmferry.model.lease import LEASE_SETTING
from vmferry.model.migration import TlsMode
from vmferry.model.settings import IMPORT_DIRS_SETTING, SETTINGS, setting_problem, split_paths
from vmferry.store.db import Store, open_store


@dataclass(frozen=True)
class SettingValue:
    key: str
    value: str
    default: str
    changed: bool  # set by the user (else the default)
    choices: tuple[str, ...]  # empty for a number (see takes)
    takes: str  # for people: "required | preferred | off", "3-600"
    help: str


def list_settings(store: Store | None = None) -> list[SettingValue]:
    changed = (store or open_store()).settings()
    return [_value(key, changed) for key in sorted(SETTINGS)]


def _value(key: str, changed: dict[str, str]) -> SettingValue:
    spec = SETTINGS[key]
    value = changed.get(key, spec.default)
    return SettingValue(key, value, spec.default, key in changed, spec.choices, spec.takes,
                        spec.help)  # fmt: skip


def get_setting(key: str, store: Store | None = None) -> str:
    problem = setting_problem(key)
    if problem:
        raise BadInputError(problem)
    return _value(key, (store or open_store()).settings()).value


def set_setting(key: str, value: str) -> SettingValue:
    problem = setting_problem(key, value)
    if problem:
        raise BadInputError(problem)
    store = open_store()
    store.set_setting(key, value)
    return _value(key, store.settings())


def unset_setting(key: str) -> SettingValue:
    problem = setting_problem(key)
    if problem:
        raise BadInputError(problem)
    store = open_store()
    store.unset_setting(key)
    return _value(key, store.settings())


def migration_tls(store: Store | None = None) -> TlsMode:
    return TlsMode(get_setting("migration.tls", store))


def owner_lease_s(store: Store | None = None) -> int:
    return int(get_setting(LEASE_SETTING, store))


def import_dirs(store: Store | None = None) -> tuple[Path, ...]:
    """The directories whose files the API's imports may read (``server.import_dirs``);
    none: the API imports nothing."""
    return tuple(Path(p) for p in split_paths(get_setting(IMPORT_DIRS_SETTING, store)))
