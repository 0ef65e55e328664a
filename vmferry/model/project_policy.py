"""What a project's self-service users may move: by which strategies, and when (issue 13).

An admin sets a policy per project (`vmferry projects set P --strategies live,warm
--window "Sat 22:00-Sun 04:00" --tz Europe/Paris`). Windows repeat every week, on the wall
clock of the policy's time zone (zoneinfo: daylight saving time moves them with the clock):

- ``Sat 22:00-Sun 04:00``: from Saturday 22:00 to Sunday 04:00;
- ``Fri 22:00-02:00``: the end's day left out: the same day, or the next when the end is
  not after the start (here Saturday 02:00);
- ``daily 12:00-13:00``: every day (``daily 22:00-02:00`` spans each midnight);
- ``always``: the whole week.

A window holds its start and not its end (``Sun 04:00`` is outside ``Sat 22:00-Sun 04:00``).
:func:`allowed_move` is the decision; its rules are ``self-service.no-policy`` (the project
has none: nothing may move), ``self-service.strategy`` and ``self-service.window``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WEEK_MIN = 7 * 24 * 60
DAY_MIN = 24 * 60
STRATEGIES = ("live", "postcopy", "warm", "cold", "warm-incremental")  # what POST /migrations takes
MAX_WINDOWS = 32

_DAY = {d.lower(): i for i, d in enumerate(DAYS)} | {
    name: i
    for i, name in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}
_TIME = r"(\d{1,2}):(\d{2})"
_TWO_DAYS = re.compile(rf"([A-Za-z]+)\s+{_TIME}\s*-\s*([A-Za-z]+)\s+{_TIME}")
_ONE_DAY = re.compile(rf"([A-Za-z]+)\s+{_TIME}\s*-\s*{_TIME}")
_FORMS = "'Sat 22:00-Sun 04:00', 'Fri 22:00-02:00', 'daily 12:00-13:00' or 'always'"


class PolicyError(ValueError):
    """A policy vmferry cannot keep as given; the message is one line for the user."""


@dataclass(frozen=True)
class Window:
    """A weekly window as written, and its spans in minutes from Monday 00:00 (``end`` may
    pass the week's end: the span wraps into the next week)."""

    text: str
    spans: tuple[tuple[int, int], ...]

    def holds(self, minute_of_week: int) -> bool:
        return any(
            start <= m < end for start, end in self.spans for m in (minute_of_week,
                                                                     minute_of_week + WEEK_MIN)
        )  # fmt: skip


@dataclass(frozen=True)
class ProjectPolicy:
    project: str
    strategies: tuple[str, ...]  # in STRATEGIES' order
    windows: tuple[Window, ...]
    tz: str = "UTC"

    @property
    def window_texts(self) -> tuple[str, ...]:
        return tuple(w.text for w in self.windows)


@dataclass(frozen=True)
class MoveDecision:
    """Allowed or not, the rule that decided, and one line saying why."""

    allowed: bool
    rule: str
    reason: str


def parse_window(text: str) -> Window:
    """The window ``text`` names (see the module docstring); :class:`PolicyError` if none."""
    written = " ".join(text.split())
    if written.lower() == "always":
        return Window("always", ((0, WEEK_MIN),))
    if match := _TWO_DAYS.fullmatch(written):
        start_day, end_day = _day(match[1], text), _day(match[4], text)
        start, end = _minute(match[2], match[3], text), _minute(match[5], match[6], text)
        a, b = start_day * DAY_MIN + start, end_day * DAY_MIN + end
        if b == a:
            raise PolicyError(f"window {text!r} ends where it starts; for the whole week "
                              "write 'always'")  # fmt: skip
        if b < a:
            b += WEEK_MIN  # e.g. Sun 22:00-Mon 02:00 wraps into the next week
        return Window(_canonical(start_day, start, end_day, end), ((a, b),))
    if match := _ONE_DAY.fullmatch(written):
        start, end = _minute(match[2], match[3], text), _minute(match[4], match[5], text)
        if start == end:
            raise PolicyError(f"window {text!r} ends where it starts")
        length = (end - start) % DAY_MIN
        if match[1].lower() == "daily":
            spans = tuple((d * DAY_MIN + start, d * DAY_MIN + start + length) for d in range(7))
            return Window(f"daily {_hhmm(start)}-{_hhmm(end)}", spans)
        day = _day(match[1], text)
        a = day * DAY_MIN + start
        end_day = (day + (1 if end <= start else 0)) % 7
        return Window(_canonical(day, start, end_day, end), ((a, a + length),))
    raise PolicyError(f"window {text!r} is not one vmferry knows; write {_FORMS}")


def _day(name: str, text: str) -> int:
    day = _DAY.get(name.lower())
    if day is None:
        raise PolicyError(f"window {text!r}: {name!r} is not a day (Mon, Tue, ... Sun)")
    return day


def _minute(hours: str, minutes: str, text: str) -> int:
    h, m = int(hours), int(minutes)
    if h == 24 and m == 0:
        return DAY_MIN  # 24:00: the end of that day
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise PolicyError(f"window {text!r}: {hours}:{minutes} is not a time of day")
    return h * 60 + m


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _canonical(start_day: int, start: int, end_day: int, end: int) -> str:
    return f"{DAYS[start_day]} {_hhmm(start)}-{DAYS[end_day]} {_hhmm(end)}"


def parse_strategies(text: str | Iterable[str]) -> tuple[str, ...]:
    """``live,warm`` (or a list) as strategies, in :data:`STRATEGIES`' order."""
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen = {n.strip().lower() for n in names if n.strip()}
    unknown = sorted(chosen - set(STRATEGIES))
    if unknown:
        raise PolicyError(f"unknown strategy {unknown[0]!r}: use {','.join(STRATEGIES)}")
    if not chosen:
        raise PolicyError(f"give at least one strategy: {','.join(STRATEGIES)}")
    return tuple(s for s in STRATEGIES if s in chosen)


def check_tz(tz: str) -> str:
    """``tz`` if zoneinfo knows it (``UTC``, ``Europe/Paris``); :class:`PolicyError` if not."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"unknown time zone {tz!r}: use an IANA name such as UTC or "
                          "Europe/Paris") from None  # fmt: skip
    return tz


def make_policy(
    project: str, strategies: str | Iterable[str], windows: Sequence[str], tz: str = "UTC"
) -> ProjectPolicy:
    """A checked policy (the project's name is checked by the caller)."""
    if not windows:
        raise PolicyError("give at least one --window (or --window always)")
    if len(windows) > MAX_WINDOWS:
        raise PolicyError(f"a policy takes at most {MAX_WINDOWS} windows, not {len(windows)}")
    parsed = tuple(parse_window(w) for w in windows)
    return ProjectPolicy(project, parse_strategies(strategies), parsed, check_tz(tz))


def minute_of_week(moment: datetime, tz: str) -> int:
    """Minutes since Monday 00:00 on the wall clock of ``tz`` at ``moment`` (aware)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("minute_of_week needs an aware datetime")
    local = moment.astimezone(ZoneInfo(tz))
    return local.weekday() * DAY_MIN + local.hour * 60 + local.minute


def allowed_move(policy: ProjectPolicy | None, strategy: str, now: datetime) -> MoveDecision:
    """May a self-service user of ``policy``'s project move one of its VMs by ``strategy``
    at ``now`` (aware)? No policy: no (rule ``self-service.no-policy``)."""
    if policy is None:
        return MoveDecision(
            False, "self-service.no-policy",
            "the project has no self-service policy: an admin sets one with "
            "`vmferry projects set PROJECT --strategies ... --window ...`",
        )  # fmt: skip
    if strategy not in policy.strategies:
        return MoveDecision(
            False, "self-service.strategy",
            f"project {policy.project} may move its VMs by {', '.join(policy.strategies)} "
            f"only, not {strategy}",
        )  # fmt: skip
    minute = minute_of_week(now, policy.tz)
    local = now.astimezone(ZoneInfo(policy.tz))
    for window in policy.windows:
        if window.holds(minute):
            why = f"{strategy} inside the window {window.text} ({policy.tz})"
            return MoveDecision(True, "self-service.window", why)
    return MoveDecision(
        False, "self-service.window",
        f"project {policy.project} moves only within {'; '.join(policy.window_texts)} "
        f"({policy.tz}); it is {DAYS[local.weekday()]} {local:%H:%M} there now",
    )  # fmt: skip
