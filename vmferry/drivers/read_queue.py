"""Reads answered by a pool of threads, in the reading interface of ``verified_copy._pump``.

A reader (a datastore's ``RangeReader``, an image's ``MappedReader``) subclasses ``ReadQueue``
and says how one read is done (``_read``); ``submit_read`` queues it, ``wait`` takes its
answer (or its exception), ``_stop_reads`` drops what has not started and waits for the rest.
A read asked with ``digest`` comes with its leaf digests, hashed in the reading thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from vmferry.drivers.nbd_client import ReadResult
from vmferry.model.disk_digest import leaf_digests


class ReadQueue:
    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._futures: dict[int, Future[ReadResult]] = {}
        self._next = 1

    def submit_read(
        self, offset: int, buffer: memoryview, *, whole: bool = False, digest: bool = False
    ) -> int:
        cookie = self._next
        self._next += 1
        self._futures[cookie] = self._pool.submit(self._answer, offset, buffer, digest)
        return cookie

    def wait(self, cookie: int) -> ReadResult:
        return self._futures.pop(cookie).result()

    def _stop_reads(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=True)

    def _answer(self, offset: int, buffer: memoryview, digest: bool) -> ReadResult:
        result = self._read(offset, buffer)
        if digest:
            result.digests = leaf_digests(result.fill_holes())
        return result

    def _read(self, offset: int, buffer: memoryview) -> ReadResult:
        raise NotImplementedError
