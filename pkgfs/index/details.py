"""What an index says of a file beyond its name and size: its sha256, its Requires-Python
and its core metadata, worked out once per exact content and kept on local disk.

Nothing here writes to the store: a file stored without a sha256 is hashed
once and the hash kept in the local cache, so the store, and the times its
files were uploaded, stay as they are.
"""

import hashlib
import io
import logging
import os
import sqlite3
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from cachetools import LRUCache
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from ..errors import Changed, NotFound
from ..metadata import UnreadableMetadata, core_metadata_headers, wheel_metadata
from ..storage import Storage, StoredFile, report_once

log = logging.getLogger(__name__)

# A wheel's first request fetches its end: the zip's central directory and, in
# most wheels (the .dist-info is written last), METADATA itself.
TAIL = 64 << 10
# Bounds what reading one wheel's METADATA may fetch, whatever its directory says.
FETCH_LIMIT = 32 << 20
# Files worked out at once for a page: S3 latency overlaps, the store is not flooded.
WORKERS = 16
# Files whose details are kept in memory besides the disk cache.
KEPT_IN_MEMORY = 100_000
# A wheel hashed whole is spooled to disk past this.
_SPOOL = 8 << 20
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class FileDetails:
    sha256: str
    requires_python: str
    core_metadata_sha256: str | None  # None: no core metadata file is served


Key = tuple[str, str, int, float]


def details_key(stored: StoredFile) -> Key:
    """What names one content of a file: its details hold while the file matches it."""
    return (stored.location, stored.revision, stored.size, stored.mtime)


class DetailsCache:
    """Details and core metadata in one sqlite file: kept across restarts, shared by the
    mounts that share a cache_dir. Core metadata is kept by the sha256 of its wheel."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as error:
            # A cache is worth nothing next to a mount that starts: begin a new one.
            log.warning("index cache %s is unreadable (%s): starting a new one", path, error)
            os.replace(path, path + ".unreadable")
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS details (location TEXT, revision TEXT, "
                   "size INTEGER, mtime REAL, sha256 TEXT, requires_python TEXT, "
                   "core_metadata_sha256 TEXT, PRIMARY KEY (location, revision, size, mtime))")
        db.execute("CREATE TABLE IF NOT EXISTS core_metadata "
                   "(wheel_sha256 TEXT PRIMARY KEY, content BLOB)")
        return db

    def details(self, key: Key) -> FileDetails | None:
        row = self._query("SELECT sha256, requires_python, core_metadata_sha256 FROM details "
                          "WHERE location = ? AND revision = ? AND size = ? AND mtime = ?", key)
        return FileDetails(*row) if row else None

    def keep_details(self, key: Key, details: FileDetails) -> None:
        self._write("INSERT OR REPLACE INTO details VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, details.sha256, details.requires_python,
                     details.core_metadata_sha256))

    def core_metadata(self, wheel_sha256: str) -> bytes | None:
        row = self._query("SELECT content FROM core_metadata WHERE wheel_sha256 = ?",
                          (wheel_sha256,))
        return row[0] if row else None

    def keep_core_metadata(self, wheel_sha256: str, content: bytes) -> None:
        self._write("INSERT OR REPLACE INTO core_metadata VALUES (?, ?)", (wheel_sha256, content))

    def _query(self, sql: str, parameters: tuple):
        with self._lock:
            return self._db.execute(sql, parameters).fetchone()

    def _write(self, sql: str, parameters: tuple) -> None:
        try:
            with self._lock:
                self._db.execute(sql, parameters)
        except sqlite3.Error as error:
            # What was worked out is still served from memory; only a restart loses it.
            report_once(self.path, f"cannot write the index cache {self.path}: {error}")


class DetailsFinder:
    """Works out what pages need of each file, concurrently, each file once."""

    def __init__(self, storage: Storage, cache: DetailsCache, workers: int = WORKERS):
        self.storage = storage
        self.cache = cache
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="index-details")
        self._known: LRUCache = LRUCache(maxsize=KEPT_IN_MEMORY)
        self._in_flight: dict[Key, Future] = {}
        self._lock = threading.Lock()

    def details_of(self, files: list[StoredFile]) -> dict[StoredFile, FileDetails | None]:
        """Each file's details; None for a file gone or replaced since it was listed."""
        found: dict[StoredFile, FileDetails | None] = {}
        waiting = {}
        for stored in files:
            known = self._known_details(stored)
            if known is not None:
                found[stored] = known
            else:
                waiting[stored] = self._work_out_later(stored)
        for stored, future in waiting.items():
            found[stored] = future.result()
        return found

    def details(self, stored: StoredFile) -> FileDetails | None:
        return self.details_of([stored])[stored]

    def core_metadata(self, stored: StoredFile) -> bytes | None:
        """The exact bytes of a wheel's METADATA, if it has readable ones."""
        details = self.details(stored)
        if details is None or details.core_metadata_sha256 is None:
            return None
        core = self.cache.core_metadata(details.sha256)
        if core is None:  # the cache lost it: read it again
            wheel = RangedFile(self._fetcher(stored), stored.size)
            core = self._core_metadata_from(wheel, stored, details.sha256)
        return core

    def copied_in(self, stored: StoredFile, local_path: str, metadata: dict[str, str]) -> None:
        """This mount stored a file from ``local_path``: its details come from that copy,
        so its pages need nothing from the store."""
        sha256 = metadata["hash_sha256"]
        core = None
        if stored.filename.endswith(".whl"):
            core = self._core_metadata_from(local_path, stored, sha256)
        self._remember(stored, _details(sha256, metadata, core, stored))

    # --- Working out -------------------------------------------------------

    def _known_details(self, stored: StoredFile) -> FileDetails | None:
        key = details_key(stored)
        with self._lock:
            known = self._known.get(key)
        if known is None:
            known = self.cache.details(key)
            if known is not None:
                with self._lock:
                    self._known[key] = known
        return known

    def _work_out_later(self, stored: StoredFile) -> Future:
        key = details_key(stored)
        with self._lock:
            future = self._in_flight.get(key)
            if future is None:
                future = self._pool.submit(self._work_out, stored)
                self._in_flight[key] = future
                future.add_done_callback(lambda _: self._done(key))
        return future

    def _done(self, key: Key) -> None:
        with self._lock:
            self._in_flight.pop(key, None)

    def _work_out(self, stored: StoredFile) -> FileDetails | None:
        try:
            if stored.filename.endswith(".whl") and stored.size > 0:
                details = self._work_out_wheel(stored)
            else:
                metadata = self.storage.read_metadata(stored)
                sha256 = _valid_sha256(metadata, stored) or self._hash_whole(stored)[0]
                details = _details(sha256, metadata, None, stored)
        except (NotFound, Changed):
            return None  # the next listing shows what is there now
        return self._remember(stored, details)

    def _work_out_wheel(self, stored: StoredFile) -> FileDetails:
        start = max(0, stored.size - TAIL)
        tail = self.storage.fetch(stored, start, TAIL)  # and the stored metadata with it
        sha256 = _valid_sha256(tail.metadata, stored)
        if sha256 is None and start == 0:
            sha256 = hashlib.sha256(tail.data).hexdigest()
        if sha256 is None:
            sha256, core = self._hash_whole(stored)
        else:
            core = self.cache.core_metadata(sha256)
            if core is None:
                wheel = RangedFile(self._fetcher(stored), stored.size, {start: tail.data})
                core = self._core_metadata_from(wheel, stored, sha256)
        return _details(sha256, tail.metadata, core, stored)

    def _hash_whole(self, stored: StoredFile) -> tuple[str, bytes | None]:
        """A file stored without a sha256: read once, hashed; a wheel's METADATA taken on
        the way. The hash is kept here only: the store is never written."""
        digest = hashlib.sha256()
        # The version listed, or Changed: a replacement's hash would be kept for it.
        reader = self.storage.open_listed(stored)
        with tempfile.SpooledTemporaryFile(_SPOOL, dir=os.path.dirname(self.cache.path)) as copy:
            try:
                for offset in range(0, stored.size, 1 << 20):
                    chunk = reader.read(offset, 1 << 20)
                    digest.update(chunk)
                    copy.write(chunk)
            finally:
                reader.close()
            sha256 = digest.hexdigest()
            log.info("hashed %s/%s, stored without a sha256; the hash is kept in %s",
                     stored.project, stored.filename, self.cache.path)
            core = (self._core_metadata_from(copy, stored, sha256)
                    if stored.filename.endswith(".whl") else None)
        return sha256, core

    def _core_metadata_from(self, wheel_file, stored: StoredFile,
                            sha256: str) -> bytes | None:
        try:
            core = wheel_metadata(wheel_file, stored.filename)
        except UnreadableMetadata as error:
            report_once(f"{stored.location} core",
                        f"{stored.project}/{stored.filename}: no core metadata to serve ({error})")
            return None
        self.cache.keep_core_metadata(sha256, core)
        return core

    def _remember(self, stored: StoredFile, details: FileDetails) -> FileDetails:
        key = details_key(stored)
        self.cache.keep_details(key, details)
        with self._lock:
            self._known[key] = details
        return details

    def _fetcher(self, stored: StoredFile) -> Callable[[int, int], bytes]:
        return lambda start, length: self.storage.fetch(stored, start, length).data


def _details(sha256: str, metadata: dict[str, str], core: bytes | None,
             stored: StoredFile) -> FileDetails:
    requires_python = metadata.get("requires_python", "")
    if not requires_python and core is not None:
        requires_python = core_metadata_headers(core).get("Requires-Python", "") or ""
    return FileDetails(sha256, _valid_requires_python(requires_python.strip(), stored),
                       hashlib.sha256(core).hexdigest() if core is not None else None)


def _valid_sha256(metadata: dict[str, str], stored: StoredFile) -> str | None:
    sha256 = metadata.get("hash_sha256", "").lower()
    if len(sha256) == 64 and set(sha256) <= _HEX:
        return sha256
    if sha256:
        report_once(f"{stored.location} sha256", f"{stored.project}/{stored.filename}: its "
                    "stored hash_sha256 is not a sha256; hashing the file instead")
    return None


def _valid_requires_python(value: str, stored: StoredFile) -> str:
    """A Requires-Python clients can parse, or none: a bad one would stop their resolution."""
    if not value:
        return ""
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        report_once(f"{stored.location} requires_python",
                    f"{stored.project}/{stored.filename}: Requires-Python {value[:100]!r} "
                    "is not valid; pages leave it out")
        return ""
    return value


class RangedFile(io.RawIOBase):
    """A stored file as a seekable binary file for zipfile, fetching only what is read.

    A read of something not fetched yet takes the whole gap up to what is,
    and a margin before it: a wheel's METADATA sits just before its central
    directory, so both usually come in one request.
    """

    MARGIN = 64 << 10

    def __init__(self, fetch: Callable[[int, int], bytes], size: int,
                 pieces: dict[int, bytes] | None = None):
        self._fetch = fetch
        self._size = size
        self._pieces = dict(pieces or {})
        self._position = 0
        self._fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        wanted = max(0, min(len(buffer), self._size - self._position))
        filled = 0
        while filled < wanted:
            chunk = self._cached(self._position + filled, wanted - filled)
            if not chunk:
                self._fetch_around(self._position + filled, wanted - filled)
                continue
            buffer[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        self._position += filled
        return filled

    def _cached(self, offset: int, length: int) -> bytes:
        for start, data in self._pieces.items():
            if start <= offset < start + len(data):
                return data[offset - start:offset - start + length]
        return b""

    def _fetch_around(self, offset: int, length: int) -> None:
        before = max((start + len(data) for start, data in self._pieces.items()
                      if start + len(data) <= offset), default=0)
        after = min((start for start in self._pieces if start > offset), default=self._size)
        start = max(before, offset - self.MARGIN)
        end = min(after, offset + max(length, self.MARGIN))
        self._fetched += end - start
        if self._fetched > FETCH_LIMIT:
            raise UnreadableMetadata(f"reading its METADATA would fetch over "
                                     f"{FETCH_LIMIT >> 20} MiB")
        data = self._fetch(start, end - start)
        if len(data) < end - start:
            raise Changed("the file is shorter than listed: it changed in the store")
        self._pieces[start] = data
