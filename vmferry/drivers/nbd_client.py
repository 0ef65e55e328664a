"""A small NBD client (the protocol of https://github.com/NetworkBlockDevice/nbd, doc/proto.md)
over a Unix socket or TCP: what vmferry needs to read an image through ``qemu-nbd`` and
write one, and to read a running VM's disk, or what changed in it, from the NBD server of a
libvirt pull-mode backup (block status of ``qemu:dirty-bitmap:NAME``: flag 1, dirty).

Fixed newstyle handshake with ``NBD_OPT_GO``; structured replies, so a read of a range that
reads as zeros comes back as a hole chunk (no bytes sent) instead of zeros; requests
pipelined by cookie. Reads land in a caller's buffer (``recv_into``, no copy); writes are
sent from the caller's buffer. No TLS, no extended headers: the server is a child of
vmferry on a socket in a private directory.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vmferry.errors import ToolError

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_SET_META_CONTEXT = 10
REP_ACK = 1
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_BIT = 1 << 31
INFO_EXPORT = 0

TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_DF = 1 << 7

CMD_FLAG_DF = 1 << 2  # a read's reply in one data chunk: no hole detection on the server

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_BLOCK_STATUS = 7

REPLY_FLAG_DONE = 1
REPLY_NONE = 0
REPLY_OFFSET_DATA = 1
REPLY_OFFSET_HOLE = 2
REPLY_BLOCK_STATUS = 5
REPLY_ERROR_BIT = 1 << 15

STATE_HOLE = 1
STATE_ZERO = 2
BASE_ALLOCATION = b"base:allocation"

MAX_REQUEST = 32 * 2**20  # qemu-nbd's limit for one read or write

_REQUEST = struct.Struct(">IHHQQI")
_SIMPLE_REPLY = struct.Struct(">IIQ")  # after the magic: error, cookie
_CHUNK = struct.Struct(">IHHQI")  # magic, flags, type, cookie, length


@dataclass
class ReadResult:
    """One read: ``buffer[:length]`` holds the data; ``holes`` are the ranges (relative to the
    read's offset) the server said read as zeros, where the buffer was not touched."""

    offset: int
    length: int
    buffer: memoryview
    holes: list[tuple[int, int]] = field(default_factory=list)
    # the data's leaf digests, when the reader's own thread computed them (no holes then)
    digests: list[bytes] | None = None

    def fill_holes(self) -> memoryview:
        """The buffer, its holes written as the zeros they read as."""
        for start, count in self.holes:
            self.buffer[start : start + count] = bytes(count)
        return self.buffer


@dataclass
class _Pending:
    command: int
    read: ReadResult | None = None
    extents: list[tuple[int, int]] = field(default_factory=list)  # (length, flags)
    covered: int = 0  # bytes of a read that data or hole chunks answered
    error: str | None = None
    done: bool = False


class NbdClient:
    """One connection to one export. Not thread-safe: one thread drives it."""

    def __init__(self, sock: socket.socket, size: int, flags: int, context: int | None) -> None:
        self._sock = sock
        self.size = size
        self.flags = flags
        self._context = context  # the id of the meta context asked for, None if not offered
        self._next_cookie = 1
        self._pending: dict[int, _Pending] = {}

    @classmethod
    def connect(cls, path: Path, *, export: str = "", timeout_s: float = 300.0) -> NbdClient:
        """Connect to the Unix socket ``path`` and negotiate ``export``. Any later wait for
        the server longer than ``timeout_s`` fails (a server that hangs; Ctrl-C works
        meanwhile)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls._open(sock, str(path), path.name, export, BASE_ALLOCATION, timeout_s)

    @classmethod
    def connect_tcp(cls, address: str, port: int, *, export: str = "",
                    meta_context: bytes = BASE_ALLOCATION,
                    timeout_s: float = 300.0) -> NbdClient:  # fmt: skip
        """Connect to ``address``:``port`` over TCP and negotiate ``export``, with block
        status of ``meta_context`` (``base:allocation``, or ``qemu:dirty-bitmap:NAME``)."""
        try:
            sock = socket.create_connection((address, port), timeout=timeout_s)
        except OSError as exc:
            raise ToolError(f"NBD connection to {address}:{port} failed: {exc}") from exc
        return cls._open(sock, None, f"{address}:{port}", export, meta_context, timeout_s)

    @classmethod
    def _open(cls, sock: socket.socket, path: str | None, where: str, export: str,
              meta_context: bytes, timeout_s: float) -> NbdClient:  # fmt: skip
        sock.settimeout(timeout_s)
        try:
            if path is not None:
                sock.connect(path)
            size, flags, context = _handshake(sock, export, meta_context)
        except OSError as exc:
            sock.close()
            raise ToolError(f"NBD connection to {where} failed: {exc}") from exc
        except ToolError:
            sock.close()
            raise
        return cls(sock, size, flags, context)

    @property
    def read_only(self) -> bool:
        return bool(self.flags & TFLAG_READ_ONLY)

    # -- requests ---------------------------------------------------------------------------

    def submit_read(
        self, offset: int, buffer: memoryview, *, whole: bool = False, digest: bool = False
    ) -> int:
        """Ask for ``len(buffer)`` bytes at ``offset``; the reply lands in ``buffer``.
        (``digest``: this client leaves the leaf digests to its caller's thread.)

        ``whole``: the server sends every byte (``NBD_CMD_FLAG_DF``: no hole detection on
        its side), for ranges its block status already called data.
        """
        length = len(buffer)
        flags = CMD_FLAG_DF if whole and self.flags & TFLAG_SEND_DF else 0
        cookie = self._send(CMD_READ, offset, length, flags=flags)
        self._pending[cookie] = _Pending(CMD_READ, ReadResult(offset, length, buffer))
        return cookie

    def submit_write(self, offset: int, data: memoryview) -> int:
        """Send ``data`` for ``offset``; the buffer may be reused when this returns."""
        cookie = self._send(CMD_WRITE, offset, len(data), data)
        self._pending[cookie] = _Pending(CMD_WRITE)
        return cookie

    def wait(self, cookie: int) -> ReadResult | None:
        """Receive replies until ``cookie``'s is complete; its read result, if a read."""
        pending = self._pending[cookie]
        while not pending.done:
            self._receive_one()
        del self._pending[cookie]
        if pending.error is not None:
            raise ToolError(pending.error)
        if pending.read is not None and pending.covered != pending.read.length:
            # chunks never overlap (the protocol), so anything else leaves bytes unanswered
            raise ToolError(
                f"NBD: a read of {pending.read.length} bytes answered for {pending.covered}"
            )
        return pending.read

    def read(self, offset: int, buffer: memoryview) -> ReadResult:
        result = self.wait(self.submit_read(offset, buffer))
        assert result is not None
        return result

    def write(self, offset: int, data: memoryview) -> None:
        self.wait(self.submit_write(offset, data))

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Extents of the meta context negotiated from ``offset``: (length, flags) pairs;
        for ``base:allocation`` flags of ``STATE_HOLE`` and ``STATE_ZERO``, for a dirty
        bitmap 1 where it is dirty. They may cover less than ``length`` (never 0)."""
        if self._context is None:
            raise ToolError("the NBD server offers no block status for the context asked")
        cookie = self._send(CMD_BLOCK_STATUS, offset, min(length, 2**32 - 2**20))
        self._pending[cookie] = _Pending(CMD_BLOCK_STATUS)
        pending = self._pending[cookie]
        self.wait(cookie)
        if not pending.extents or pending.extents[0][0] == 0:
            raise ToolError(f"NBD: no block status at offset {offset}")
        return pending.extents

    def close(self) -> None:
        """Wait for what is outstanding, say goodbye (``NBD_CMD_DISC``) and close."""
        try:
            for cookie in list(self._pending):
                self.wait(cookie)
            with contextlib.suppress(OSError):
                self._sock.sendall(_REQUEST.pack(REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        finally:
            self._sock.close()

    def abandon(self) -> None:
        """Close without waiting (after an error or an interrupt)."""
        self._sock.close()

    # -- wire -------------------------------------------------------------------------------

    def _send(
        self,
        command: int,
        offset: int,
        length: int,
        data: memoryview | None = None,
        *,
        flags: int = 0,
    ) -> int:
        cookie = self._next_cookie
        self._next_cookie += 1
        header = _REQUEST.pack(REQUEST_MAGIC, flags, command, cookie, offset, length)
        try:
            self._sock.sendall(header)
            if data is not None:
                self._sock.sendall(data)
        except OSError as exc:
            raise ToolError(f"NBD request failed: {exc}") from exc
        return cookie

    def _receive_one(self) -> None:
        magic = struct.unpack(">I", self._recv_exact(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            error, cookie = _SIMPLE_REPLY.unpack(b"\0\0\0\0" + self._recv_exact(12))[1:]
            pending = self._lookup(cookie)
            if error:
                pending.error = f"NBD error {error} ({_errno_name(error)})"
            elif pending.read is not None:
                self._recv_into(pending.read.buffer[: pending.read.length])
                pending.covered = pending.read.length
            pending.done = True
            return
        if magic != STRUCTURED_REPLY_MAGIC:
            raise ToolError(f"NBD: unexpected reply magic {magic:#x}")
        flags, kind, cookie, length = struct.unpack(">HHQI", self._recv_exact(16))
        pending = self._lookup(cookie)
        if kind == REPLY_OFFSET_DATA and pending.read is not None:
            start = struct.unpack(">Q", self._recv_exact(8))[0] - pending.read.offset
            count = length - 8
            if start < 0 or start + count > pending.read.length:
                raise ToolError("NBD: a data chunk outside the range read")
            self._recv_into(pending.read.buffer[start : start + count])
            pending.covered += count
        elif kind == REPLY_OFFSET_HOLE and pending.read is not None:
            at, count = struct.unpack(">QI", self._recv_exact(12))
            start = at - pending.read.offset
            if start < 0 or start + count > pending.read.length:
                raise ToolError("NBD: a hole chunk outside the range read")
            pending.read.holes.append((start, count))
            pending.covered += count
        elif kind == REPLY_BLOCK_STATUS and pending.command == CMD_BLOCK_STATUS:
            payload = self._recv_exact(length)
            context = struct.unpack(">I", payload[:4])[0]
            if context == self._context:
                pending.extents.extend(
                    struct.iter_unpack(">II", payload[4 : 4 + (length - 4) // 8 * 8])
                )
        elif kind & REPLY_ERROR_BIT:
            payload = self._recv_exact(length)
            error, msg_len = struct.unpack(">IH", payload[:6])
            message = payload[6 : 6 + msg_len].decode(errors="replace")
            pending.error = f"NBD error {_errno_name(error)}: {message or 'no message'}"
        elif kind == REPLY_NONE:
            self._recv_exact(length)
        else:
            raise ToolError(f"NBD: unexpected reply chunk type {kind}")
        if flags & REPLY_FLAG_DONE:
            pending.done = True

    def _lookup(self, cookie: int) -> _Pending:
        try:
            return self._pending[cookie]
        except KeyError:
            raise ToolError(f"NBD: a reply for unknown request {cookie}") from None

    def _recv_exact(self, count: int) -> bytes:
        buf = bytearray(count)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        try:
            while got < len(view):
                n = self._sock.recv_into(view[got:])
                if n == 0:
                    raise ToolError("NBD server closed the connection")
                got += n
        except OSError as exc:
            raise ToolError(f"NBD reply failed: {exc}") from exc


def _errno_name(error: int) -> str:
    names = {1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC", 75: "EOVERFLOW"}
    return names.get(error, str(error))


def _handshake(sock: socket.socket, export: str,
               meta_context: bytes = BASE_ALLOCATION) -> tuple[int, int, int | None]:  # fmt: skip
    greeting = _recv_all(sock, 18)
    if greeting[:8] != NBDMAGIC or struct.unpack(">Q", greeting[8:16])[0] != IHAVEOPT:
        raise ToolError("not an NBD server with the newstyle handshake")
    server_flags = struct.unpack(">H", greeting[16:18])[0]
    if not server_flags & FLAG_FIXED_NEWSTYLE:
        raise ToolError("the NBD server lacks the fixed newstyle handshake")
    client_flags = FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES)
    sock.sendall(struct.pack(">I", client_flags))
    _option(sock, OPT_STRUCTURED_REPLY, b"")
    if _option_replies(sock, OPT_STRUCTURED_REPLY)[-1][0] != REP_ACK:
        raise ToolError("the NBD server does not offer structured replies")
    name = export.encode()
    query = struct.pack(">I", len(name)) + name
    query += struct.pack(">II", 1, len(meta_context)) + meta_context
    _option(sock, OPT_SET_META_CONTEXT, query)
    context: int | None = None
    for kind, payload in _option_replies(sock, OPT_SET_META_CONTEXT, tolerate_errors=True):
        if kind == REP_META_CONTEXT and payload[4:] == meta_context:
            context = struct.unpack(">I", payload[:4])[0]
    _option(sock, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    size = flags = -1
    for kind, payload in _option_replies(sock, OPT_GO):
        if kind == REP_INFO and struct.unpack(">H", payload[:2])[0] == INFO_EXPORT:
            size, flags = struct.unpack(">QH", payload[2:12])
    if size < 0:
        raise ToolError("the NBD server did not give the export's size")
    return size, flags, context


def _option(sock: socket.socket, option: int, data: bytes) -> None:
    sock.sendall(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)


def _option_replies(
    sock: socket.socket, option: int, *, tolerate_errors: bool = False
) -> list[tuple[int, bytes]]:
    """The replies to ``option`` up to its final one (an ACK or an error)."""
    replies: list[tuple[int, bytes]] = []
    for kind, payload in _iter_option_replies(sock, option):
        if kind & REP_ERR_BIT and tolerate_errors:
            break
        if kind & REP_ERR_BIT:
            text = payload.decode(errors="replace")
            raise ToolError(f"the NBD server refused option {option}: {text or kind}")
        replies.append((kind, payload))
        if kind == REP_ACK:
            break
    return replies


def _iter_option_replies(sock: socket.socket, option: int) -> Iterator[tuple[int, bytes]]:
    while True:
        magic, opt, kind, length = struct.unpack(">QIII", _recv_all(sock, 20))
        if magic != OPT_REPLY_MAGIC or opt != option:
            raise ToolError("NBD: unexpected option reply")
        yield kind, _recv_all(sock, length)


def _recv_all(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ToolError("NBD server closed the connection during the handshake")
        data += chunk
    return data
