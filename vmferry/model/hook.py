"""Hooks: what runs before a move, after it, and when it fails (issue 13).

A hook is a webhook (a POST of the job's JSON, signed with HMAC-SHA256) or a local
executable (the job's JSON on its stdin). Phases:

- ``pre-migrate``: before the move; any failure blocks the move (and says which hook);
- ``post-migrate``: after a move that put the VM on the destination, as part of its
  verification; a failure is recorded, and fails the verification when the hook is
  ``required``;
- ``on-failure``: when the move's job ends other than completed; recorded only.

Pure: validation (:func:`make_hook`, one-line :class:`HookSpecError`), the signature, the
retry rule and the backoff, and what a phase's results mean (:func:`phase_outcome`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_TIMEOUT_S = 600.0
MAX_RETRIES = 10
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 2  # webhooks; an exec hook runs once
OUTPUT_CAP_BYTES = 64 * 1024  # of each of stdout and stderr (an exec), of a response body
SIGNATURE_HEADER = "X-Vmferry-Signature"
EVENT_HEADER = "X-Vmferry-Event"
DELIVERY_HEADER = "X-Vmferry-Delivery"
HOOK_HEADER = "X-Vmferry-Hook"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


class HookPhase(enum.StrEnum):
    PRE_MIGRATE = "pre-migrate"
    POST_MIGRATE = "post-migrate"
    ON_FAILURE = "on-failure"


class HookKind(enum.StrEnum):
    WEBHOOK = "webhook"
    EXEC = "exec"


class HookSpecError(ValueError):
    """A hook vmferry cannot run as given; the message is one line for the user."""


@dataclass(frozen=True)
class Hook:
    """A hook as declared (`vmferry hooks add`, or a plan's ``hooks:``). ``target`` is the
    webhook's URL or the executable's absolute path; ``secret_env`` names the environment
    variable that holds a webhook's HMAC secret (the secret itself is never stored)."""

    name: str
    phase: HookPhase
    kind: HookKind
    target: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 0
    required: bool = False
    secret_env: str | None = None


def make_hook(
    name: str,
    phase: str,
    *,
    url: str | None = None,
    exec_path: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    retries: int | None = None,
    required: bool = False,
    secret_env: str | None = None,
) -> Hook:
    """A checked hook; :class:`HookSpecError` (one line) for the first problem found.

    ``retries`` None: :data:`DEFAULT_RETRIES` for a webhook, 0 for an exec hook."""
    if not _NAME.fullmatch(name):
        raise HookSpecError(
            f"hook name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit"
        )
    try:
        chosen = HookPhase(phase)
    except ValueError:
        phases = "|".join(p.value for p in HookPhase)
        raise HookSpecError(f"hook {name}: unknown phase {phase!r}: use {phases}") from None
    if (url is None) == (exec_path is None):
        raise HookSpecError(f"hook {name}: give exactly one of a URL (webhook) or an executable")
    if not (0 < timeout_s <= MAX_TIMEOUT_S):  # also refuses NaN
        raise HookSpecError(
            f"hook {name}: timeout {timeout_s:g} s must be more than 0 and at most "
            f"{MAX_TIMEOUT_S:g} s"
        )
    if required and chosen is not HookPhase.POST_MIGRATE:
        raise HookSpecError(
            f"hook {name}: required applies to post-migrate hooks (a pre-migrate hook's "
            "failure always blocks the move; an on-failure hook's is only recorded)"
        )
    if url is not None:
        _check_url(name, url)
        if secret_env is None:
            raise HookSpecError(
                f"hook {name}: a webhook is signed: name the environment variable holding "
                "its secret (--secret-env VAR, secret_env: in a plan)"
            )
        if not _ENV_NAME.fullmatch(secret_env):
            raise HookSpecError(
                f"hook {name}: secret_env {secret_env!r} must be an environment variable "
                "name (capitals, digits and '_', not starting with a digit)"
            )
        tries = DEFAULT_RETRIES if retries is None else retries
        if not 0 <= tries <= MAX_RETRIES:
            raise HookSpecError(f"hook {name}: retries must be 0 to {MAX_RETRIES}, not {tries}")
        return Hook(name, chosen, HookKind.WEBHOOK, url, float(timeout_s), tries, required,
                    secret_env)  # fmt: skip
    assert exec_path is not None
    if not exec_path.startswith("/") or "\x00" in exec_path:
        raise HookSpecError(f"hook {name}: the executable {exec_path!r} must be an absolute path")
    if secret_env is not None:
        raise HookSpecError(f"hook {name}: a secret signs webhooks; an exec hook takes none")
    if retries:
        raise HookSpecError(
            f"hook {name}: retries apply to webhooks (connection errors and 5xx); an exec "
            "hook runs once"
        )
    return Hook(name, chosen, HookKind.EXEC, exec_path, float(timeout_s), 0, required, None)


def _check_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise HookSpecError(f"hook {name}: URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HookSpecError(f"hook {name}: URL {url!r} must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise HookSpecError(
            f"hook {name}: URL {url!r} carries credentials; sign with --secret-env instead"
        )


def shown_target(hook: Hook) -> str:
    """The target as job events show it: a webhook's URL without its query or fragment
    (where a token might hide), an executable's path as it is."""
    if hook.kind is not HookKind.WEBHOOK:
        return hook.target
    parts = urlsplit(hook.target)
    hidden = "?..." if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{hidden}"


def signature(secret: bytes, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER`: ``sha256=`` and the hex HMAC-SHA256 of the
    body with the secret."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def retriable(status_code: int | None, connection_error: bool) -> bool:
    """Whether a webhook attempt is worth trying again: it could not connect, or the
    receiver answered 5xx. A 4xx (or 3xx) is the receiver's answer, and a read that timed
    out may have been acted on: neither is retried."""
    if connection_error:
        return True
    return status_code is not None and 500 <= status_code <= 599


def backoff_s(attempt: int, base_s: float = 0.5, cap_s: float = 8.0) -> float:
    """How long to wait after failed attempt ``attempt`` (1-based): base, 2x, 4x ... capped."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class HookAttempt:
    """One try of a hook, as its job event records it."""

    hook: str
    phase: HookPhase
    kind: HookKind
    attempt: int  # 1-based
    ok: bool
    duration_ms: int
    status_code: int | None = None  # a webhook's HTTP status
    exit_code: int | None = None  # an exec hook's exit status (-N: killed by signal N)
    error: str | None = None  # why it failed, in one line
    output: str = ""  # a webhook's response body, or an exec hook's stdout (bounded)
    stderr: str = ""  # an exec hook's stderr (bounded)
    delivery: str | None = None  # a webhook's delivery id (the same on every retry)
    will_retry: bool = False


@dataclass(frozen=True)
class HookResult:
    """A hook's end: its last attempt's verdict."""

    hook: Hook
    ok: bool
    attempts: int
    summary: str  # one line: "ok (HTTP 204)", "HTTP 500 after 3 attempts", "exit 1", ...


@dataclass(frozen=True)
class HookOutcome:
    """What a phase's hooks mean for the move. ``passed``: pre-migrate: the move may go
    ahead; post-migrate: verification holds (no required hook failed); on-failure: always.
    ``problems``: one line per failure that decides (blocks, or fails verification);
    ``warnings``: failures recorded only."""

    phase: HookPhase
    passed: bool
    results: tuple[HookResult, ...] = ()
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        """One line for the job's reason when the phase did not pass."""
        if self.passed:
            return None
        if self.phase is HookPhase.PRE_MIGRATE:
            return "blocked by pre-migrate hook: " + "; ".join(self.problems)
        return "; ".join(self.problems)


def hooks_of_phase(hooks: Sequence[Hook], phase: HookPhase) -> tuple[Hook, ...]:
    return tuple(h for h in hooks if h.phase is phase)


def phase_outcome(phase: HookPhase, results: Sequence[HookResult]) -> HookOutcome:
    """Pure: what the results of ``phase``'s hooks mean (see :class:`HookOutcome`)."""
    problems: list[str] = []
    warnings: list[str] = []
    for r in results:
        if r.ok:
            continue
        line = f"{phase} hook {r.hook.name} failed: {r.summary}"
        decides = phase is HookPhase.PRE_MIGRATE or (
            phase is HookPhase.POST_MIGRATE and r.hook.required
        )
        if decides:
            problems.append(line + (" (required)" if phase is HookPhase.POST_MIGRATE else ""))
        else:
            warnings.append(line)
    return HookOutcome(phase, not problems, tuple(results), tuple(problems), tuple(warnings))


def merge_hooks(*layers: Sequence[Hook]) -> tuple[Hook, ...]:
    """Hooks from broadest to narrowest (a plan's, a plan's VM entry's, the VM's own): a
    hook of a narrower layer replaces the one of the same name, in its place; order is
    otherwise kept (each phase's hooks run in this order)."""
    merged: dict[str, Hook] = {}
    for layer in layers:
        for hook in layer:
            merged[hook.name] = hook
    return tuple(merged.values())
