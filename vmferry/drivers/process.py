"""Run external tools with their failures turned into vmferry errors."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from vmferry.errors import ToolError


def run_tool(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    timeout_s: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell) and return it; raise ToolError when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolError(f"{argv[0]} is not installed; run `make install`") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"`{' '.join(argv)}` did not finish within {timeout_s:g} s") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {done.returncode}"
        raise ToolError(f"`{' '.join(argv)}` failed: {last}")
    return done
