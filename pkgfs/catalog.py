"""The cached listing of a store: project -> filename -> StoredFile."""

from __future__ import annotations

import bisect
import logging
import re
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Callable

from .errors import PkgfsError, StorageUnavailable
from .heap import give_back_freed
from .storage import Storage, StoredFile, report_skipped

log = logging.getLogger(__name__)

# Seconds after a failed listing during which lookups fail at once rather than
# each making the store wait for another listing.
RETRY_AFTER = 2.0


class Catalog:
    """Lists the whole store at most once per ``ttl`` seconds.

    One listing answers every ``ls`` and ``stat`` until it expires: on S3 that
    is one LIST request per 1000 objects and no request per file. A listing
    used when it is half its ``ttl`` old is listed again in the background, so
    a mount in use never waits for a listing; none is shown past ``ttl`` after
    it was made (so what is shown is at most ``ttl`` plus one listing's time
    behind the store), and a finished listing is always used, however long it
    took.

    One listing is in flight at a time, and everyone waiting for it gets its
    outcome together: a lookup waits ``wait_limit`` seconds at most (the
    listing goes on). After a failed listing, lookups that need one fail at
    once for ``retry_after`` seconds instead of each starting another.

    What is shown is a snapshot that never changes: a listing is built aside
    and swapped in whole, and this mount's own writes and removals make a new
    snapshot at once, so readers never iterate something that changes under
    them. A write during a listing is replayed onto it.
    """

    def __init__(self, storage: Storage, ttl: float, *, wait_limit: float = 60.0,
                 retry_after: float = RETRY_AFTER):
        self.storage = storage
        self.ttl = ttl
        self.wait_limit = wait_limit
        self.retry_after = retry_after
        self._snapshot: Tree | None = None
        self._listed_at = 0.0  # time.monotonic() when the snapshot's listing began
        self._expires_at = 0.0  # and when it is too old to show: ttl after it was made
        self._lock = threading.Lock()
        self._listing: _Listing | None = None  # the one in flight
        self._failed: _Listing | None = None  # the last, if it failed less than retry_after ago
        # Goes up whenever what the catalog shows may have changed: pages made
        # from it are good while it stays the same.
        self.generation = 0
        self._listeners: list[Callable[[set[str]], None]] = []

    def counts(self) -> tuple[int, int]:
        """Files and projects of the listing shown now (none listed yet: zeros)."""
        shown = self._snapshot or {}
        return sum(len(files) for files in shown.values()), len(shown)

    def listing_age(self) -> float | None:
        """Seconds since the listing shown now began; None before the first."""
        return time.monotonic() - self._listed_at if self._snapshot is not None else None

    def on_change(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener`` with the projects whose files changed, whenever some did.

        Called with the catalog's lock held: a listener must return at once.
        """
        self._listeners.append(listener)

    def tree(self) -> Tree:
        with self._lock:
            now = time.monotonic()
            if self._snapshot is not None and now < self._expires_at:
                if now >= self._expires_at - self.ttl / 2 and not self._retrying(now):
                    self._begin_listing()
                return self._snapshot
            if self._retrying(now):
                raise self._failed.failure()
            listing = self._begin_listing()
        if not listing.done.wait(self.wait_limit):
            raise StorageUnavailable(
                f"listing the store has taken over {self.wait_limit:g}s (it goes on in the "
                "background): try again soon, or raise pkgfs.list_timeout")
        if listing.error is not None:
            raise listing.failure()
        return self._snapshot

    def project(self, project: str) -> ProjectFiles | None:
        return self.tree().get(project)

    def file(self, project: str, filename: str) -> StoredFile | None:
        return self.tree().get(project, {}).get(filename)

    def added(self, stored: StoredFile) -> None:
        """This mount stored a file: show it at once, without listing the store again."""
        self._apply(_with, stored)

    def removed(self, stored: StoredFile) -> None:
        """This mount deleted a file: hide it at once."""
        self._apply(_without, stored)

    def _apply(self, change: Callable[[Tree, StoredFile, Storage], Tree],
               stored: StoredFile) -> None:
        with self._lock:
            if self._snapshot is not None:
                self._snapshot = change(self._snapshot, stored, self.storage)
            if self._listing is not None:
                self._listing.replay.append((change, stored))
            self._changed({stored.project})

    def _retrying(self, now: float) -> bool:
        """Whether the last listing failed so recently that none is started yet."""
        return self._failed is not None and now < self._failed.ended + self.retry_after

    def _begin_listing(self) -> "_Listing":
        """The listing in flight, started now if none is. Called with the lock held."""
        if self._listing is None:
            self._listing = _Listing()
            threading.Thread(target=self._run, args=(self._listing,), name="catalog-listing",
                             daemon=True).start()
        return self._listing

    def _run(self, listing: "_Listing") -> None:
        """Make a listing; lookups meanwhile get the snapshot shown, or wait for this one."""
        try:
            tree = self._list()
        except PkgfsError as error:
            listing.error = error
            log.warning("listing the store failed: %s", error)
        except Exception as error:  # a bug: told in the log, and lookups get EIO
            log.exception("listing the store failed")
            listing.error = PkgfsError(f"listing the store failed: {error!r}")
        with self._lock:
            listing.ended = time.monotonic()
            self._listing = None
            if listing.error is not None:
                self._failed = listing
            else:
                self._failed = None
                for change, stored in listing.replay:
                    tree = change(tree, stored, self.storage)
                if listing.started > self._listed_at:  # no newer listing was shown meanwhile
                    self._install(tree, listing.started)
        listing.done.set()
        if listing.error is None:
            give_back_freed()  # what the listing replaced, and the buffers it outgrew

    def _install(self, tree: Tree, started: float) -> None:
        if self._snapshot is not None:
            changed = {project for project in self._snapshot.keys() | tree.keys()
                       if self._snapshot.get(project) != tree.get(project)}
            if changed:
                self._changed(changed)
        self._snapshot = tree
        self._listed_at = started
        self._expires_at = time.monotonic() + self.ttl

    def _changed(self, projects: set[str]) -> None:
        self.generation += 1
        for listener in self._listeners:
            listener(projects)

    def _list(self) -> Tree:
        started = time.monotonic()
        listed = _Columns()
        for stored in self.storage.list_files():
            listed.add(stored, self.storage)
        tree = listed.tree(self.storage)
        log.debug("listed %d files in %d projects in %.3fs",
                  len(listed), len(tree), time.monotonic() - started)
        return tree


class _Columns:
    """Files as a listing finds them, appended to a few long buffers as they come (names
    end to end, sizes, times, ETags), whatever their project: a listing holds no object a
    file, nor a few a project, that would stay behind scattered among the short-lived
    objects of the S3 answers and keep their memory from being given back."""

    __slots__ = ("projects", "project_of", "names", "name_ends", "sizes", "mtimes", "etags",
                 "revisions", "locations")

    def __init__(self):
        self.projects: dict[str, int] = {}  # project -> its number, in order found
        self.project_of = array("I")  # each file's project number
        self.names = bytearray()  # the names, UTF-8, end to end
        self.name_ends = array("I")  # where each name ends in ``names``
        self.sizes = array("q")
        self.mtimes = array("d")
        self.etags = bytearray()  # 16 bytes a file; zeros where it has no plain ETag
        self.revisions: dict[int, str] = {}  # revisions that are no plain ETag, by position
        self.locations: dict[int, str] = {}  # locations where the store would not put it

    def __len__(self) -> int:
        return len(self.sizes)

    def add(self, stored: StoredFile, storage: Storage) -> None:
        self.project_of.append(self.projects.setdefault(stored.project, len(self.projects)))
        etag = _etag_bytes(stored.revision)
        elsewhere = stored.location != storage.location(stored.project, stored.filename)
        self._append(stored.filename.encode(), stored.size, stored.mtime, etag or bytes(16),
                     stored.revision if stored.revision and etag is None else None,
                     stored.location if elsewhere else None)

    def name(self, index: int) -> bytes:
        """A file's name, UTF-8."""
        return bytes(self.names[self.name_ends[index - 1] if index else 0:self.name_ends[index]])

    def location(self, index: int, project: str, storage: Storage) -> str:
        return self.locations.get(index) or storage.location(project, self.name(index).decode())

    def tree(self, storage: Storage) -> Tree:
        """Each project's files, in name order, in columns they share."""
        shared = _Columns()
        tree: Tree = {}
        for project, positions in self._by_project():
            first = len(shared)
            for index in _once(project, positions, self, storage):
                shared._copy(self, index)
            tree[project] = ProjectFiles(project, shared, first, len(shared), storage)
        shared.names = bytes(shared.names)  # never appended to again
        if shared.etags.count(0) == len(shared.etags):  # a file store's: none has an ETag
            shared.etags = b""
        return tree

    def _by_project(self) -> Iterator[tuple[str, array]]:
        """The projects in name order, each with its files' positions (a counting sort: no
        object a file)."""
        counts = array("I", bytes(4 * len(self.projects)))
        for number in self.project_of:
            counts[number] += 1
        starts = array("I", bytes(4 * len(self.projects)))
        total = 0
        for number, count in enumerate(counts):
            starts[number] = total
            total += count
        grouped = array("I", bytes(4 * len(self)))
        filled = array("I", starts)
        for index, number in enumerate(self.project_of):
            grouped[filled[number]] = index
            filled[number] += 1
        for project in sorted(self.projects):
            number = self.projects[project]
            yield project, grouped[starts[number]:starts[number] + counts[number]]

    def _copy(self, other: _Columns, index: int) -> None:
        """Append another's file ``index``."""
        self._append(other.name(index), other.sizes[index], other.mtimes[index],
                     other.etags[16 * index:16 * index + 16], other.revisions.get(index),
                     other.locations.get(index))

    def _append(self, name: bytes, size: int, mtime: float, etag: bytes, revision: str | None,
                location: str | None) -> None:
        """One file's row; ``revision`` and ``location`` only where out of the ordinary."""
        index = len(self.sizes)
        self.names += name
        self.name_ends.append(len(self.names))
        self.sizes.append(size)
        self.mtimes.append(mtime)
        self.etags += etag
        if revision is not None:
            self.revisions[index] = revision
        if location is not None:
            self.locations[index] = location


class ProjectFiles(Mapping):
    """One project's files in a listing, filename -> StoredFile: a stretch of columns that
    all projects of the listing share. A million files must fit in memory (issue 13):
    an object a file with its own strings cost ~450 bytes, an object a project with its
    own columns ~185, this ~100 (ten files a project; the project's name, its view and
    its entry in the listing's dict are a third of it).

    Names are kept sorted (as UTF-8, whose byte order is the order of the names); sizes
    and times in arrays; S3 ETags (a quoted MD5) as 16 bytes each; the location only
    where it is not where the store puts a file of that name. A StoredFile is made when
    one is asked for.
    """

    __slots__ = ("project", "_storage", "_columns", "_first", "_end")

    def __init__(self, project: str, columns: _Columns, first: int, end: int,
                 storage: Storage):
        self.project = project
        self._storage = storage
        self._columns = columns
        self._first = first
        self._end = end

    @classmethod
    def of(cls, project: str, files: Iterable[StoredFile], storage: Storage) -> ProjectFiles:
        columns = _Columns()
        for stored in files:
            columns.add(stored, storage)
        return columns.tree(storage).get(project) or cls(project, columns, 0, 0, storage)

    def __getitem__(self, filename: str) -> StoredFile:
        index = self._find(filename)
        if index is None:
            raise KeyError(filename)
        return self._file(index)

    def __contains__(self, filename: object) -> bool:
        return isinstance(filename, str) and self._find(filename) is not None

    def __iter__(self) -> Iterator[str]:
        return (self._columns.name(index).decode() for index in range(self._first, self._end))

    def __len__(self) -> int:
        return self._end - self._first

    def sizes_and_times(self) -> Iterator[tuple[str, int, float]]:
        """Each file's name, size and time, in name order, with no StoredFile made."""
        columns = self._columns
        for index in range(self._first, self._end):
            yield columns.name(index).decode(), columns.sizes[index], columns.mtimes[index]

    def newest_mtime(self) -> float:
        """The time of its newest file (its folder's), with no StoredFile made."""
        return max(self._columns.mtimes[self._first:self._end], default=0.0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProjectFiles):
            return NotImplemented
        return self._rows() == other._rows()

    __hash__ = None

    def _find(self, filename: str) -> int | None:
        wanted = filename.encode()
        index = bisect.bisect_left(range(self._first, self._end), wanted,
                                   key=self._columns.name) + self._first
        return index if index < self._end and self._columns.name(index) == wanted else None

    def _rows(self) -> tuple:
        """What tells this project's files from others: its stretch of each column."""
        columns, first, end = self._columns, self._first, self._end
        return ([columns.name(index) for index in range(first, end)], columns.sizes[first:end],
                columns.mtimes[first:end], bytes(columns.etags[16 * first:16 * end]),
                [columns.revisions.get(index) for index in range(first, end)],
                [columns.locations.get(index) for index in range(first, end)])

    def _file(self, index: int) -> StoredFile:
        columns = self._columns
        filename = columns.name(index).decode()
        revision = columns.revisions.get(index, "")
        etag = columns.etags[16 * index:16 * index + 16]
        if not revision and any(etag):
            revision = f'"{etag.hex()}"'
        return StoredFile(self.project, filename, columns.sizes[index], columns.mtimes[index],
                          columns.location(index, self.project, self._storage), revision)


def _once(project: str, positions: array, columns: _Columns, storage: Storage) -> list[int]:
    """A project's files' positions in name order, each name once (a store may hold one
    name twice: under two hash folders, or two project folders that normalize alike);
    the first found is shown."""
    kept: list[int] = []
    for index in sorted(positions, key=lambda index: (columns.name(index), index)):
        if kept and columns.name(kept[-1]) == columns.name(index):
            report_skipped(columns.location(index, project, storage),
                           f"same file as {columns.location(kept[-1], project, storage)}")
        else:
            kept.append(index)
    return kept


_PLAIN_ETAG = re.compile(r'"[0-9a-f]{32}"')


def _etag_bytes(revision: str) -> bytes | None:
    """A plain ETag (the quoted MD5 of a single-part upload) as 16 bytes, or None."""
    return bytes.fromhex(revision[1:-1]) if _PLAIN_ETAG.fullmatch(revision) else None


Tree = dict[str, ProjectFiles]


class _Listing:
    """One listing of the store: who waits for it waits on ``done``."""

    def __init__(self):
        self.started = time.monotonic()
        self.ended = 0.0
        self.done = threading.Event()
        self.error: PkgfsError | None = None
        # This mount's changes while it runs, to replay onto it.
        self.replay: list[tuple[Callable[[Tree, StoredFile, Storage], Tree], StoredFile]] = []

    def failure(self) -> PkgfsError:
        """The listing's error, for one more waiter: each raises an exception of its own."""
        return type(self.error)(str(self.error))


def _with(tree: Tree, stored: StoredFile, storage: Storage) -> Tree:
    """A new snapshot with a file in it; ``tree`` stays as it was."""
    files = {**tree.get(stored.project, {}), stored.filename: stored}
    return {**tree, stored.project: ProjectFiles.of(stored.project, files.values(), storage)}


def _without(tree: Tree, stored: StoredFile, storage: Storage) -> Tree:
    """A new snapshot without a file (nor its project, if it was the last)."""
    files = [found for name, found in tree.get(stored.project, {}).items()
             if name != stored.filename]
    others = {project: found for project, found in tree.items() if project != stored.project}
    if not files:
        return others
    return {**others, stored.project: ProjectFiles.of(stored.project, files, storage)}
