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
        listed: dict[str, _Columns] = {}
        count = 0
        for stored in self.storage.list_files():
            columns = listed.get(stored.project)
            if columns is None:
                columns = listed[stored.project] = _Columns()
            columns.add(stored, self.storage)
            count += 1
        tree = {project: ProjectFiles(project, listed.pop(project), self.storage)
                for project in list(listed)}
        log.debug("listed %d files in %d projects in %.3fs",
                  count, len(tree), time.monotonic() - started)
        return tree


class _Columns:
    """One project's files as a listing finds them, appended to arrays as they come, so
    that a listing holds no object a file: its peak is little more than what it leaves
    (the heap a peak grew to is not given back: small objects pin it)."""

    __slots__ = ("names", "sizes", "mtimes", "etags", "revisions", "locations")

    def __init__(self):
        self.names: list[str] = []
        self.sizes = array("q")
        self.mtimes = array("d")
        self.etags = bytearray()  # 16 bytes a file; zeros where it has no plain ETag
        self.revisions: dict[int, str] = {}  # revisions that are no plain ETag, by position
        self.locations: dict[int, str] = {}  # locations where the store would not put it

    def add(self, stored: StoredFile, storage: Storage) -> None:
        index = len(self.names)
        self.names.append(stored.filename)
        self.sizes.append(stored.size)
        self.mtimes.append(stored.mtime)
        etag = _etag_bytes(stored.revision)
        self.etags += etag or bytes(16)
        if stored.revision and etag is None:
            self.revisions[index] = stored.revision
        if stored.location != storage.location(stored.project, stored.filename):
            self.locations[index] = stored.location

    def location(self, index: int, project: str, storage: Storage) -> str:
        return self.locations.get(index) or storage.location(project, self.names[index])


class ProjectFiles(Mapping):
    """One project's files in a listing, filename -> StoredFile, held in columns: a
    million files must fit in memory (issue 13), and an object a file with its own
    strings cost ~450 bytes where these cost ~185 (ten files a project).

    Names are kept sorted; sizes and times in arrays; S3 ETags (a quoted MD5) as 16
    bytes each; the location only where it is not where the store puts a file of that
    name. A StoredFile is made when one is asked for.
    """

    __slots__ = ("project", "_storage", "_names", "_sizes", "_mtimes", "_etags", "_revisions",
                 "_locations")

    def __init__(self, project: str, columns: _Columns, storage: Storage):
        self.project = project
        self._storage = storage
        order = _sorted_once(project, columns, storage)
        self._names = tuple(columns.names[index] for index in order)
        self._sizes = array("q", (columns.sizes[index] for index in order))
        self._mtimes = array("d", (columns.mtimes[index] for index in order))
        etags = b"".join(bytes(columns.etags[16 * index:16 * index + 16]) for index in order)
        self._etags = etags if any(etags) else b""
        self._revisions = {new: columns.revisions[old] for new, old in enumerate(order)
                           if old in columns.revisions} or _NONE
        self._locations = {new: columns.locations[old] for new, old in enumerate(order)
                           if old in columns.locations} or _NONE

    @classmethod
    def of(cls, project: str, files: Iterable[StoredFile], storage: Storage) -> ProjectFiles:
        columns = _Columns()
        for stored in files:
            columns.add(stored, storage)
        return cls(project, columns, storage)

    def __getitem__(self, filename: str) -> StoredFile:
        index = bisect.bisect_left(self._names, filename)
        if index == len(self._names) or self._names[index] != filename:
            raise KeyError(filename)
        return self._file(index)

    def __contains__(self, filename: object) -> bool:
        index = bisect.bisect_left(self._names, filename)
        return index < len(self._names) and self._names[index] == filename

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProjectFiles):
            return NotImplemented
        return (self._names, self._sizes, self._mtimes, self._etags, self._revisions,
                self._locations) == (other._names, other._sizes, other._mtimes, other._etags,
                                     other._revisions, other._locations)

    __hash__ = None

    def _file(self, index: int) -> StoredFile:
        filename = self._names[index]
        location = self._locations.get(index) or self._storage.location(self.project, filename)
        revision = self._revisions.get(index, "")
        if not revision and self._etags:
            etag = self._etags[16 * index:16 * index + 16]
            revision = f'"{etag.hex()}"' if any(etag) else ""
        return StoredFile(self.project, filename, self._sizes[index], self._mtimes[index],
                          location, revision)


def _sorted_once(project: str, columns: _Columns, storage: Storage) -> list[int]:
    """The positions of a project's files in name order, each name once (a store may
    hold one name twice: under two hash folders, or two project folders that normalize
    alike); the first found is shown."""
    order = sorted(range(len(columns.names)), key=lambda index: (columns.names[index], index))
    kept: list[int] = []
    for index in order:
        if kept and columns.names[kept[-1]] == columns.names[index]:
            report_skipped(columns.location(index, project, storage),
                           f"same file as {columns.location(kept[-1], project, storage)}")
        else:
            kept.append(index)
    return kept


_NONE: dict = {}  # shared by the many projects with nothing out of the ordinary
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
