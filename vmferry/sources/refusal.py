"""How the source parsers refuse input: one-line reasons, and bounded reads of descriptors.

Pure parsers raise ``Refused(reason)``, which knows nothing of the file; the thin wrappers
that read files turn it into ``BadInputError("<file>: <reason>")``. Every string taken from
the input (member names, backing file names, keys) goes through ``printable`` first, so a
hostile name cannot break the one-line message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vmferry.errors import BadInputError

_MAX_SHOWN = 120


class Refused(Exception):
    """A parser's reason to refuse its input, without the file's name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def printable(text: str, limit: int = _MAX_SHOWN) -> str:
    """``text`` with control and other non-printable characters escaped, cut to ``limit``."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def bad_input(name: str | Path, reason: str) -> BadInputError:
    """The error for a refused file: ``<file name>: <reason>``, on one line."""
    shown = Path(name).name if isinstance(name, Path) else name
    line = f"{printable(str(shown))}: {reason}"
    return BadInputError(" ".join(line.splitlines()))


def regular_file_size(path: Path) -> int:
    """The size of ``path`` after following links; refuses anything but a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Refused("file not found") from None
    except OSError as exc:
        raise Refused(f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"is not a regular file ({file_kind(st.st_mode)})")
    return st.st_size


def file_kind(mode: int) -> str:
    """A word for a file type: ``directory``, ``character device`` ..."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "regular file" if stat.S_ISREG(mode) else "special file"


def read_descriptor(path: Path, max_bytes: int, what: str) -> bytes:
    """A whole text descriptor (VMX, OVF, VMDK), refused when above ``max_bytes`` or empty."""
    size = regular_file_size(path)
    if size == 0:
        raise Refused(f"file is empty (no {what} in it)")
    if size > max_bytes:
        raise Refused(f"{what} is {size} bytes, above the {max_bytes}-byte limit")
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Refused(f"{what} is above the {max_bytes}-byte limit")
    return data
