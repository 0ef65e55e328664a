"""Service probes a VM declares (``vmferry vm set VM --probe SPEC``): what its users reach,
tried before, during and after a move; the largest gap between answers is the service's
blackout.

Specs: ``tcp:HOST:PORT`` (a connection is accepted), ``http://HOST:PORT/PATH=STATUS`` (a GET
answers STATUS, 200 when ``=STATUS`` is left out; ``https://`` too), ``icmp:HOST`` (an echo
reply). An IPv6 address goes in brackets: ``tcp:[2001:db8::5]:443``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


class ProbeKind(enum.StrEnum):
    TCP = "tcp"
    HTTP = "http"
    ICMP = "icmp"


@dataclass(frozen=True)
class ProbeSpec:
    text: str  # as the user wrote it
    kind: ProbeKind
    host: str
    port: int | None = None
    url: str | None = None  # http: the URL to GET
    expect_status: int | None = None


class ProbeSpecError(ValueError):
    """A spec vmferry cannot read; the message is one line for the user."""


_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
_TCP = re.compile(rf"tcp:{_HOST}:(\d+)")
_ICMP = re.compile(rf"icmp:{_HOST}")
_STATUS = re.compile(r"(.*)=(\d{3})")
FORMS = "tcp:HOST:PORT, http://HOST:PORT/PATH=STATUS or icmp:HOST"


def parse_probe(text: str) -> ProbeSpec:
    """Pure: the probe ``text`` names; :class:`ProbeSpecError` with one line if it names none."""
    text = text.strip()
    if match := _TCP.fullmatch(text):
        return ProbeSpec(text, ProbeKind.TCP, match[1].strip("[]"), _port(match[2], text))
    if match := _ICMP.fullmatch(text):
        return ProbeSpec(text, ProbeKind.ICMP, match[1].strip("[]"))
    if text.startswith(("http://", "https://")):
        url, status = text, 200
        if match := _STATUS.fullmatch(text):
            url, status = match[1], int(match[2])
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ProbeSpecError(f"probe {text!r}: {exc}") from exc
        if not parts.hostname:
            raise ProbeSpecError(f"probe {text!r} names no host; use {FORMS}")
        if not 100 <= status <= 599:
            raise ProbeSpecError(f"probe {text!r}: {status} is not an HTTP status")
        return ProbeSpec(text, ProbeKind.HTTP, parts.hostname, port, url, status)
    raise ProbeSpecError(f"probe {text!r} is not one vmferry knows; use {FORMS}")


def _port(digits: str, text: str) -> int:
    port = int(digits)
    if not 1 <= port <= 65535:
        raise ProbeSpecError(f"probe {text!r}: port {port} is not between 1 and 65535")
    return port


@dataclass(frozen=True)
class VmProbes:
    """What a VM declares about itself (`vmferry vm set`): its probes, the network
    namespace on the orchestrator's machine to run them from (None: where vmferry runs), and
    a health command for its guest agent."""

    vm: str
    probes: tuple[str, ...] = ()
    netns: str | None = None
    health: tuple[str, ...] = ()  # argv its guest agent runs to say it is healthy (exit 0)


@dataclass(frozen=True)
class ProbeSample:
    """One try of probe ``index``, answered (``ok``) or not, at ``at`` (monotonic seconds)."""

    index: int
    at: float
    ok: bool


@dataclass(frozen=True)
class ProbeResult:
    """`migrate --json`'s ``verification.probes[]``: ``ok`` is whether the probe answered
    after the move; ``max_gap_ms`` the longest time between two answers while the move ran
    (the service's blackout). A probe that did not answer before the move (``baseline``
    false) is reported but does not count."""

    spec: str
    ok: bool
    max_gap_ms: int | None
    baseline: bool
    tries: int


def summarize(
    spec: str, samples: Sequence[ProbeSample], started: float, moved: float | None
) -> ProbeResult:
    """Pure: probe ``spec``'s result from its tries (oldest first).

    ``started`` is when the move began; tries before it are the baseline. ``moved`` is
    when the move ended (None: it did not); an answer after it makes the probe ``ok``. The
    gap runs from the last answer before the move to each next answer (to the last try when
    no answer came back).
    """
    before = [s for s in samples if s.at < started]
    during = [s for s in samples if s.at >= started]
    baseline = any(s.ok for s in before)
    ok = moved is not None and any(s.ok and s.at >= moved for s in during)
    answers = [s.at for s in samples if s.ok]
    gap: float | None = None
    if baseline and during:
        last = max(s.at for s in before if s.ok)
        for at in [a for a in answers if a >= started] + ([] if ok else [during[-1].at]):
            gap = max(gap or 0.0, at - last)
            last = at
    return ProbeResult(spec, ok, None if gap is None else round(gap * 1000), baseline,
                       len(samples))  # fmt: skip
