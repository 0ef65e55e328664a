"""vmferry's settings: the keys it knows, the values each takes, and their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.model.lease import DEFAULT_LEASE_S, LEASE_SETTING
from vmferry.model.migration import TlsMode

IMPORT_DIRS_SETTING = "server.import_dirs"


def split_paths(value: str) -> tuple[str, ...]:
    """Pure: the paths of a ':'-separated setting (empty: none)."""
    return tuple(part for part in value.split(":") if part)


@dataclass(frozen=True)
class SettingSpec:
    key: str
    choices: tuple[str, ...]
    default: str
    help: str
    bounds: tuple[int, int] | None = None  # a whole number in this range (choices is empty)
    paths: bool = False  # absolute paths separated by ':' (choices is empty; "": none)

    @property
    def takes(self) -> str:
        if self.bounds is not None:
            return f"{self.bounds[0]}-{self.bounds[1]}"
        if self.paths:
            return "absolute directories separated by ':' (empty: none)"
        return " | ".join(self.choices)


SETTINGS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        SettingSpec(
            "migration.tls",
            tuple(m.value for m in TlsMode),
            TlsMode.PREFERRED.value,
            "encrypt live migration streams: required (refuse to move in the clear), "
            "preferred (when both hosts have migration certificates), off",
        ),
        SettingSpec(
            LEASE_SETTING,
            (),
            str(DEFAULT_LEASE_S),
            "seconds a job's owner may go without renewing its lease before its job counts as "
            "orphaned (renewed three times per lease)",
            bounds=(3, 600),
        ),
        SettingSpec(
            IMPORT_DIRS_SETTING,
            (),
            "",
            "the directories on the server's machine whose files `POST /api/v1/imports` may "
            "read (and write its temporary files in); empty: the API imports nothing",
            paths=True,
        ),
    )
}


def setting_problem(key: str, value: str | None = None) -> str | None:
    """Pure: why ``key`` (and ``value``) is not a setting vmferry takes, or None."""
    spec = SETTINGS.get(key)
    if spec is None:
        return f"no setting {key!r}; vmferry knows {', '.join(sorted(SETTINGS))}"
    if value is None:
        return None
    if spec.bounds is not None:
        low, high = spec.bounds
        if not (value.isdigit() and low <= int(value) <= high):
            return f"{key} takes a whole number from {low} to {high}, not {value!r}"
        return None
    if spec.paths:
        bad = [p for p in split_paths(value) if not p.startswith("/")]
        if bad:
            return f"{key} takes absolute paths separated by ':', not {bad[0]!r}"
        return None
    if value not in spec.choices:
        return f"{key} takes {spec.takes}, not {value!r}"
    return None
