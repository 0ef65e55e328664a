"""Findings of pre-flight checks (live migration, import): one shape everywhere."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Severity(enum.StrEnum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """``id`` is stable and machine-readable (``cpu.incompatible``); ``remediation`` says what
    the user can do about it."""

    id: str
    severity: Severity
    message: str
    remediation: str = ""


_SEVERITY_ORDER = {Severity.BLOCKER: 0, Severity.WARNING: 1, Severity.INFO: 2}


def by_severity(findings: Iterable[Finding]) -> list[Finding]:
    """Blockers first, then warnings, then infos; each kept in its own order."""
    return sorted(findings, key=lambda f: _SEVERITY_ORDER[f.severity])


def is_blocked(findings: Iterable[Finding]) -> bool:
    return any(f.severity is Severity.BLOCKER for f in findings)
