"""Reading an S3 object through the mount: few GETs, pinned to the listed ETag, read ahead."""

import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import NotFound, StorageError, StorageUnavailable
from . import Reader, StoredFile

if TYPE_CHECKING:
    from .s3 import S3Storage

log = logging.getLogger(__name__)

# What one GET fetches around a read that is not sequential (a wheel's zip
# directory, at its end), and what a sequential read takes from its stream at
# a time.
READ_WINDOW = 1 << 20
PREFETCH_WINDOWS = 8  # what a streaming reader holds ahead of the kernel's reads, at most
KEPT_SEGMENTS = 2  # windows a reader keeps, for reads the kernel sends out of order
READ_AHEAD_WORKERS = 16  # threads that read ahead for all the streams of a mount
# A file no bigger than this is read to its end by the first GET: most wheels
# are, and a second request would cost more than the bytes.
SMALL_FILE = 4 << 20


class S3Reader(Reader):
    """A first read fetches a window around it; once reads run on from there, one
    open-ended GET streams the rest, so a sequential read costs two requests.

    What was fetched is kept as a few segments, the newest last, so reads the
    kernel sends out of order are served without copying the data again.
    """

    def __init__(self, storage: "S3Storage", stored: StoredFile):
        self._storage = storage
        self.stored = stored  # reads are pinned to its ETag: this version or an error
        self._size = stored.size
        self._lock = threading.Lock()
        self._segments: collections.deque = collections.deque(maxlen=KEPT_SEGMENTS)
        self._stream: _Prefetcher | None = None  # reads on from the end of the last segment

    def read(self, offset: int, size: int) -> bytes:
        size = min(size, self._size - offset)
        if size <= 0:
            return b""
        with self._lock:
            data = self._slice(offset, size)
            if data is None:
                try:
                    self._fetch(offset, size)
                except NotFound:  # a reader of a removed file: an error, never ENOENT
                    raise StorageError(f"{self.stored.location} was removed while open") \
                        from None
                data = self._slice(offset, size)
            if data is None:
                raise self._shorter()
            return data

    def _fetch(self, offset: int, size: int) -> None:
        # The kernel has several reads of a file in flight: one a little ahead
        # of the stream is still sequential.
        ahead = KEPT_SEGMENTS * READ_WINDOW
        if self._segments and self._segments[0][0] <= offset <= self._end() + ahead:
            self._stream_on(offset + size)
        else:
            self._jump(offset, size)

    def _end(self) -> int:
        start, chunk = self._segments[-1]
        return start + len(chunk)

    def _slice(self, offset: int, size: int) -> bytes | None:
        """The bytes from ``offset`` if the segments hold all of them, else None."""
        pieces, position, end = [], offset, offset + size
        for start, chunk in self._segments:
            if start <= position < start + len(chunk):
                pieces.append(chunk[position - start:end - start])
                position = min(end, start + len(chunk))
                if position == end:
                    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return None

    def _jump(self, offset: int, size: int) -> None:
        """A read away from the last: one ranged GET of a window from there."""
        self._close_stream()
        self._segments.clear()
        rest = self._size - offset
        length = rest if self._size <= SMALL_FILE else min(max(size, READ_WINDOW), rest)
        self._segments.append((offset, self._storage.fetch(self.stored, offset, length).data))

    def _stream_on(self, end: int) -> None:
        """Sequential reads: take chunks from the open-ended GET, opening it once."""
        try:
            if self._stream is None:
                body = self._storage.open_stream(self.stored, self._end())
                self._stream = _Prefetcher(self._storage, body)
            while self._end() < end:
                chunk = self._stream.next_chunk()
                if not chunk:
                    break
                self._segments.append((self._end(), chunk))
        except StorageError:
            self._close_stream()
            raise

    def _shorter(self) -> StorageError:
        self._close_stream()
        return StorageError(f"{self.stored.location} is shorter than listed: "
                            "it changed while being read")

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        with self._lock:
            self._close_stream()
            self._segments.clear()


class ReadAheadBudget:
    """The windows all readers of a mount may hold read ahead of the kernel's reads, and
    the threads that read them: what many files read at once cost is bounded by these,
    not by their number."""

    def __init__(self, mib: int, workers: int = READ_AHEAD_WORKERS):
        self._windows = threading.BoundedSemaphore(max(1, mib * (1 << 20) // READ_WINDOW))
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="s3-read-ahead")

    def take(self) -> bool:
        """A window, if one is free now."""
        return self._windows.acquire(blocking=False)

    def give_back(self) -> None:
        self._windows.release()


class _Prefetcher:
    """Reads a GET body ahead, a window at a time, in the mount's pool of read-ahead
    threads, so the network and the kernel's reads overlap. Each window read ahead comes
    out of the mount's budget; with none free, the stream reads only what its reader asks
    for. One window of a stream is read at a time: a body is read in order."""

    def __init__(self, storage: "S3Storage", body):
        self._storage = storage
        self._body = body
        self._budget = storage.read_ahead
        self._read: collections.deque = collections.deque()  # (chunk or error, budgeted)
        self._changed = threading.Condition()
        self._reading = False  # a window of this stream is being read
        self._ended = False  # its end, or an error, has been read
        self._stopped = False
        with self._changed:
            self._read_on(asked=False)

    def _read_on(self, *, asked: bool) -> None:
        """Start reading the next window, if the budget allows or the reader waits for it.
        Called holding ``_changed``."""
        if self._reading or self._ended or self._stopped or len(self._read) >= PREFETCH_WINDOWS:
            return
        budgeted = self._budget.take()
        if budgeted or asked:
            self._reading = True
            self._budget.pool.submit(self._read_window, budgeted)

    def _read_window(self, budgeted: bool) -> None:
        try:
            chunk = self._storage.read_stream(self._body, READ_WINDOW)
        except StorageError as error:
            chunk = error
        except Exception as error:
            if not self._stopped:  # closed while reading: the reader has gone
                log.exception("reading ahead failed")
            chunk = StorageError(f"reading ahead failed: {error!r}")
        last = not isinstance(chunk, bytes) or not chunk  # an error, or the end
        with self._changed:
            self._reading = False
            if budgeted and (self._stopped or last):
                self._budget.give_back()  # nothing held: closed, failed, or the end
                budgeted = False
            if self._stopped:
                return
            self._read.append((chunk, budgeted))
            self._ended = last
            self._changed.notify_all()
            self._read_on(asked=False)

    def next_chunk(self) -> bytes:
        """The next chunk of the body; empty at its end. Waits ``timeout`` seconds at most:
        an endpoint that drips its answer fails the read instead of holding it."""
        deadline = time.monotonic() + self._storage.timeout
        with self._changed:
            while not self._read:
                self._read_on(asked=True)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StorageUnavailable(
                        f"{self._storage.endpoint} sent no {READ_WINDOW >> 20} MiB of the file "
                        f"within {self._storage.timeout:g}s (pkgfs.timeout)")
                self._changed.wait(left)
            chunk, budgeted = self._read[0]
            if isinstance(chunk, bytes) and chunk:
                self._read.popleft()  # the end, or an error, stays for the next call
            if budgeted:
                self._budget.give_back()
            self._read_on(asked=False)
        if isinstance(chunk, StorageError):
            raise chunk
        return chunk

    def close(self) -> None:
        with self._changed:
            self._stopped = True
            held = [budgeted for _, budgeted in self._read if budgeted]
            self._read.clear()
        for _ in held:
            self._budget.give_back()
        self._storage.close_stream(self._body)  # a window being read fails at once
