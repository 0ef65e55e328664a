"""A vSphere datastore file read over HTTPS with range requests on several connections.

vCenter and ESXi serve a datastore's files at ``/folder/<path>?dcPath=DC&dsName=DS`` to a
client that shows the SOAP session's cookie (``vmware_soap_session``). :class:`RangeReader`
reads one such file with ``connections`` persistent HTTPS connections, one thread each,
every request a ``Range: bytes=A-B`` GET checked for its status, its ``Content-Range`` and
its length, paced by a :class:`ByteRate` when the import has a bandwidth cap (shared by
every reader of the import). A request that fails (connection reset, short body, 5xx) is
sent again on a new connection, ``retries`` times at most with a growing pause, then the
whole read fails with one line (:class:`ToolError`). 401/403 and 404 fail at once:
retrying cannot help.

It offers what :func:`vmferry.drivers.verified_copy._pump` needs of a reader (``size``,
``block_status``, ``submit_read``, ``wait``): a raw extent (an ESXi ``-flat.vmdk``) is read
once, digested and written sparse into the pool directly. Why not nbdkit's curl plugin
under qemu-nbd: nbdkit 1.32's curl plugin serializes the requests of a connection and
QEMU's NBD client (10.0) opens one connection (``multi-conn`` is refused), so there would
be one range request in flight at a time (docs/architecture.md, "vSphere disks").
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vmferry.drivers.nbd_client import STATE_ZERO, ReadResult
from vmferry.drivers.pacing import ByteRate
from vmferry.drivers.read_queue import ReadQueue
from vmferry.errors import BadInputError, ToolError

__all__ = ["DatastoreFile", "RangeReader", "download_to"]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
DEFAULT_RETRIES = 5
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DatastoreFile:
    """One file to read: its URL, the session cookie, the TLS context the source asks for
    and its datastore path (``[DS] dir/file``) for messages."""

    url: str
    cookie: str
    context: ssl.SSLContext
    label: str


class _Refused(Exception):
    """An answer retrying cannot change (401, 403, 404, 416)."""


def status_from_areas(
    areas: list[tuple[int, int]], offset: int, length: int
) -> list[tuple[int, bool]]:
    """Pure: ``[offset, offset + length)`` cut into runs of (length, holds data), data being
    inside one of ``areas`` (start, length; in any order, overlapping or not), zeros elsewhere."""
    runs: list[tuple[int, bool]] = []
    position, end = offset, offset + length
    for start, size in sorted(areas):
        stop = start + size
        if stop <= position:
            continue
        if start >= end:
            break
        if start > position:
            runs.append((start - position, False))
            position = start
        take = min(stop, end) - position
        if runs and runs[-1][1]:  # touching or overlapping the last: one run
            runs[-1] = (runs[-1][0] + take, True)
        else:
            runs.append((take, True))
        position += take
    if position < end:
        runs.append((end - position, False))
    return runs


class RangeReader(ReadQueue):
    """``file`` read with ``connections`` parallel range requests (see the module)."""

    def __init__(
        self,
        file: DatastoreFile,
        *,
        connections: int = 4,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 0.2,
        rate: ByteRate | None = None,
    ) -> None:
        if connections < 1:
            raise BadInputError("--connections must be at least 1")
        self.file = file
        self.connections = connections
        self.retries = retries
        self.backoff_s = backoff_s
        self.rate = rate  # shared with the other readers of an import (None: no cap)
        self.requests = 0  # range GETs sent, retries included
        self.retried = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()  # set by close(): paced and retrying reads give up
        self._local = threading.local()
        self._open: list[http.client.HTTPSConnection] = []
        parts = urlsplit(file.url)
        self._host, self._port = parts.hostname or "", parts.port or 443
        self._target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        super().__init__(connections, "vmferry-range")
        # where the data is, when vSphere said so (QueryChangedDiskAreas with "*"); else
        # every byte is read
        self.data_areas: list[tuple[int, int]] | None = None
        try:
            self.size = self._probe_size()
        except BaseException:
            self.close()
            raise

    # -- the reading interface of verified_copy._pump --------------------------------------

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """All data, unless ``data_areas`` says where the data is: HTTP itself does not say
        where the zeros are (they are read and hashed)."""
        if self.data_areas is None:
            return [(length, 0)]
        return [(n, 0 if data else STATE_ZERO)
                for n, data in status_from_areas(self.data_areas, offset, length)]  # fmt: skip

    def read(self, offset: int, buffer: memoryview) -> ReadResult:
        return self.wait(self.submit_read(offset, buffer))

    def close(self) -> None:
        self._closing.set()
        self._stop_reads()
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, context=self.file.context, timeout=REQUEST_TIMEOUT_S
            )
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _probe_size(self) -> int:
        """The file's size, from the ``Content-Range`` of a one-byte range."""
        probe = memoryview(bytearray(1))
        total: list[int] = []
        self._with_retries(0, 1, lambda: self._get(0, probe, total))
        return total[0]

    def _read(self, offset: int, buffer: memoryview) -> ReadResult:
        length = len(buffer)
        if self.rate is not None:
            self.rate.take(length, self._closing)
        self._with_retries(offset, length, lambda: self._get(offset, buffer, None))
        return ReadResult(offset, length, buffer)

    def _with_retries(self, offset: int, length: int, attempt: Callable[[], None]) -> None:
        problem = ""
        for n in range(self.retries + 1):
            if n:
                with self._lock:
                    self.retried += 1
                self._closing.wait(self.backoff_s * n)
            if self._closing.is_set():
                raise ToolError(f"reading {self.file.label} stopped: the reader was closed")
            try:
                attempt()
                return
            except _Refused as exc:
                self._drop_connection()
                raise ToolError(str(exc)) from None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._drop_connection()
                problem = str(exc) or type(exc).__name__
        raise ToolError(f"reading {self.file.label} failed at bytes {offset}-{offset + length - 1} "
                        f"after {self.retries + 1} tries: {problem}")  # fmt: skip

    def _get(self, offset: int, buffer: memoryview, total: list[int] | None) -> None:
        end = offset + len(buffer) - 1
        with self._lock:
            self.requests += 1
        conn = self._connection()
        conn.request("GET", self._target, headers={
            "Range": f"bytes={offset}-{end}", "Cookie": self.file.cookie,
        })  # fmt: skip
        response = conn.getresponse()
        status = response.status
        if status in (401, 403):
            response.read()
            raise _Refused(f"vSphere refused to read {self.file.label} (HTTP {status}): the "
                           "session may have expired; run the import again")  # fmt: skip
        if status == 404:
            response.read()
            raise _Refused(f"{self.file.label} is not on the datastore (HTTP 404)")
        if status != 206:
            response.read()
            raise ValueError(f"HTTP {status} {response.reason} for a range request")
        match = _CONTENT_RANGE.match(response.getheader("Content-Range") or "")
        if match is None or int(match.group(1)) != offset or int(match.group(2)) != end:
            response.read()
            raise ValueError(f"the server answered another range ({match and match.group(0)})")
        if total is not None:
            if match.group(3) == "*":
                raise _Refused(f"vSphere does not say the size of {self.file.label}")
            total.append(int(match.group(3)))
        got = 0
        while got < len(buffer):
            n = response.readinto(buffer[got:])
            if not n:
                raise ValueError(f"the connection ended after {got} of {len(buffer)} bytes")
            got += n
        response.read()  # nothing more: keeps the connection usable


def download_to(reader: RangeReader, target: Path, *, chunk: int = 4 * 2**20) -> None:
    """The whole file into ``target`` (a new file), ``2 * connections`` reads in flight, each
    written where it belongs. ``target`` is removed when it fails."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            offsets = iter(range(0, reader.size, chunk))
            pending: list[tuple[int, int, bytearray]] = []
            while True:
                while len(pending) < 2 * reader.connections:
                    offset = next(offsets, None)
                    if offset is None:
                        break
                    buf = bytearray(min(chunk, reader.size - offset))
                    pending.append((reader.submit_read(offset, memoryview(buf)), offset, buf))
                if not pending:
                    break
                cookie, offset, buf = pending.pop(0)
                reader.wait(cookie)
                os.pwrite(fd, buf, offset)
        finally:
            os.close(fd)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
