"""vmferry's settings: the keys it knows, the values each takes, and their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.model.migration import TlsMode


@dataclass(frozen=True)
class SettingSpec:
    key: str
    choices: tuple[str, ...]
    default: str
    help: str


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
    )
}


def setting_problem(key: str, value: str | None = None) -> str | None:
    """Pure: why ``key`` (and ``value``) is not a setting vmferry takes, or None."""
    spec = SETTINGS.get(key)
    if spec is None:
        return f"no setting {key!r}; vmferry knows {', '.join(sorted(SETTINGS))}"
    if value is not None and value not in spec.choices:
        return f"{key} takes {' | '.join(spec.choices)}, not {value!r}"
    return None
