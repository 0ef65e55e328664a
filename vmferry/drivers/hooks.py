"""Running hooks: a webhook over HTTP (httpx) or a local executable.

:func:`deliver_webhook` POSTs the body with ``X-Vmferry-Signature: sha256=<hex HMAC>``,
``X-Vmferry-Event: <phase>``, ``X-Vmferry-Delivery: <id>`` (the same on every retry, so a
receiver can drop a repeat) and ``X-Vmferry-Hook: <name>``; it tries again, after a
backoff, on connection errors and 5xx only. :func:`run_executable` runs the executable in
a session of its own with the body on stdin, kills its whole process group at the
timeout, and keeps at most :data:`~vmferry.model.hook.OUTPUT_CAP_BYTES` of each of stdout
and stderr. Each attempt is handed to ``on_attempt`` as it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import IO

import httpx

from vmferry import __version__
from vmferry.model.hook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    HOOK_HEADER,
    OUTPUT_CAP_BYTES,
    SIGNATURE_HEADER,
    Hook,
    HookAttempt,
    HookKind,
    backoff_s,
    retriable,
    signature,
)

__all__ = ["AttemptFn", "deliver_webhook", "run_executable"]

AttemptFn = Callable[[HookAttempt], None]
_KILL_GRACE_S = 2.0


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def deliver_webhook(
    hook: Hook,
    body: bytes,
    secret: bytes,
    delivery: str,
    on_attempt: AttemptFn,
    *,
    backoff_base_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> HookAttempt:
    """POST ``body`` to ``hook.target`` until an attempt succeeds (2xx), fails for good
    (anything else but a connection error or a 5xx) or ``hook.retries`` retries are
    spent; the last attempt."""
    assert hook.kind is HookKind.WEBHOOK
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"vmferry/{__version__}",
        SIGNATURE_HEADER: signature(secret, body),
        EVENT_HEADER: hook.phase.value,
        DELIVERY_HEADER: delivery,
        HOOK_HEADER: hook.name,
    }
    timeout = httpx.Timeout(hook.timeout_s)
    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False,
                      trust_env=False) as client:  # fmt: skip
        attempt = 1
        while True:
            last = _post_once(client, hook, body, headers, delivery, attempt)
            if not last.ok and attempt <= hook.retries and last.will_retry:
                on_attempt(last)
                sleep(backoff_s(attempt, backoff_base_s))
                attempt += 1
                continue
            last = _final(last)
            on_attempt(last)
            return last


def _final(attempt: HookAttempt) -> HookAttempt:
    return replace(attempt, will_retry=False)


def _base(hook: Hook, attempt: int, delivery: str | None = None) -> HookAttempt:
    return HookAttempt(hook.name, hook.phase, hook.kind, attempt, ok=False, duration_ms=0,
                       delivery=delivery)  # fmt: skip


def _post_once(
    client: httpx.Client, hook: Hook, body: bytes, headers: Mapping[str, str], delivery: str,
    attempt: int,
) -> HookAttempt:  # fmt: skip
    started = time.monotonic()
    base = _base(hook, attempt, delivery)
    try:
        with client.stream("POST", hook.target, content=body, headers=dict(headers)) as answer:
            kept = _read_capped(answer)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return replace(base, duration_ms=_ms_since(started),
                       error=f"could not connect: {_why(exc)}",
                       will_retry=retriable(None, connection_error=True))  # fmt: skip
    except httpx.TimeoutException as exc:
        return replace(base, duration_ms=_ms_since(started),
                       error=f"no answer within {hook.timeout_s:g} s ({type(exc).__name__})",
                       will_retry=retriable(None, connection_error=False))  # fmt: skip
    except httpx.HTTPError as exc:
        return replace(base, duration_ms=_ms_since(started),
                       error=f"{type(exc).__name__}: {_why(exc)}")  # fmt: skip
    status = answer.status_code
    ok = 200 <= status <= 299
    return replace(base, ok=ok, duration_ms=_ms_since(started), status_code=status,
                   error=None if ok else f"HTTP {status}", output=kept,
                   will_retry=not ok and retriable(status, connection_error=False))  # fmt: skip


def _read_capped(answer: httpx.Response) -> str:
    kept = bytearray()
    for chunk in answer.iter_bytes():
        kept += chunk[: OUTPUT_CAP_BYTES - len(kept)]
        if len(kept) >= OUTPUT_CAP_BYTES:
            break
    return _text(bytes(kept))


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- exec hooks ---------------------------------------------------------------------------


class _Capped:
    """Reads a pipe to its end in a thread, keeping its first ``cap`` bytes."""

    def __init__(self, pipe: IO[bytes], cap: int) -> None:
        self.kept = bytearray()
        self.dropped = 0
        self._pipe, self._cap = pipe, cap
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self._pipe.read1(65536):  # type: ignore[attr-defined]
                room = self._cap - len(self.kept)
                self.kept += chunk[:room]
                self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        more = f"\n[vmferry: {self.dropped} more bytes not kept]" if self.dropped else ""
        return _text(bytes(self.kept)) + more


def _feed(pipe: IO[bytes], body: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):  # it need not read it all
        pipe.write(body)
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        pipe.close()


def run_executable(
    hook: Hook,
    body: bytes,
    env: Mapping[str, str],
    on_attempt: AttemptFn,
    *,
    cap: int = OUTPUT_CAP_BYTES,
) -> HookAttempt:
    """Run ``hook.target`` (no shell, no arguments) with ``body`` on stdin and ``env`` as
    its whole environment; exit 0 is success. At ``hook.timeout_s`` its process group is
    sent SIGTERM, then SIGKILL 2 s later."""
    assert hook.kind is HookKind.EXEC
    started = time.monotonic()
    base = _base(hook, 1)
    try:
        proc = subprocess.Popen([hook.target], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env), start_new_session=True,
                                close_fds=True)  # fmt: skip
    except OSError as exc:
        done = replace(base, duration_ms=_ms_since(started),
                       error=f"cannot run {hook.target}: {exc.strerror or exc}")  # fmt: skip
        on_attempt(done)
        return done
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = _Capped(proc.stdout, cap), _Capped(proc.stderr, cap)
    feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
    feeder.start()
    timed_out = False
    try:
        code = proc.wait(timeout=hook.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        code = _kill_group(proc)
    readers = (out.thread, err.thread, feeder)
    for thread in readers:
        thread.join(timeout=0.5)
    if any(t.is_alive() for t in readers):  # something it started still holds the pipes
        _kill_leftovers(proc.pid)
        for thread in readers:
            thread.join(timeout=_KILL_GRACE_S)
    for pipe in (proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            pipe.close()
    if timed_out:
        error: str | None = f"did not finish within {hook.timeout_s:g} s: its process group killed"
    elif code != 0:
        error = f"exit {code}" if code > 0 else f"killed by signal {-code}"
    else:
        error = None
    done = replace(base, ok=error is None, duration_ms=_ms_since(started), exit_code=code,
                   error=error, output=out.text(), stderr=err.text())  # fmt: skip
    on_attempt(done)
    return done


def _kill_group(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the process group, SIGKILL after a grace; the exit status."""
    for sig, wait_s in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()  # pragma: no cover - SIGKILL's wait has no timeout


def _kill_leftovers(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
