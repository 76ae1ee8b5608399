"""The cached listing of a store: project -> filename -> StoredFile."""

import logging
import threading
import time
from typing import Callable

from .errors import PkgfsError
from .storage import Storage, StoredFile, report_skipped

log = logging.getLogger(__name__)

Tree = dict[str, dict[str, StoredFile]]


class Catalog:
    """Lists the whole store at most once per ``ttl`` seconds.

    One listing answers every ``ls`` and ``stat`` until it expires: on S3 that
    is one LIST request per 1000 objects and no request per file. A listing
    used when it is half its ``ttl`` old is listed again in the background, so
    a mount in use never waits for a listing; none is shown past ``ttl`` after
    it was made (so what is shown is at most ``ttl`` plus one listing's time
    behind the store), and a finished listing is always used, however long it
    took.

    What is shown is a snapshot that never changes: a listing is built aside
    and swapped in whole, and this mount's own writes and removals make a new
    snapshot at once, so readers never iterate something that changes under
    them. A write during a background listing is replayed onto it.
    """

    def __init__(self, storage: Storage, ttl: float):
        self.storage = storage
        self.ttl = ttl
        self._snapshot: Tree | None = None
        self._listed_at = 0.0  # time.monotonic() when the snapshot's listing began
        self._expires_at = 0.0  # and when it is too old to show: ttl after it was made
        # Held while listing in the foreground, so that concurrent lookups
        # wait for one listing instead of each starting its own.
        self._lock = threading.Lock()
        # This mount's changes since a background listing began, to replay
        # onto it; None while none runs.
        self._replay: list[tuple[Callable[[Tree, StoredFile], Tree], StoredFile]] | None = None
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
            if self._snapshot is None or now >= self._expires_at:
                self._install(self._list(), now)
            elif now >= self._expires_at - self.ttl / 2 and self._replay is None:
                self._replay = []
                threading.Thread(target=self._refresh, name="catalog-refresh",
                                 daemon=True).start()
            return self._snapshot

    def project(self, project: str) -> dict[str, StoredFile] | None:
        return self.tree().get(project)

    def file(self, project: str, filename: str) -> StoredFile | None:
        return self.tree().get(project, {}).get(filename)

    def added(self, stored: StoredFile) -> None:
        """This mount stored a file: show it at once, without listing the store again."""
        self._apply(_with, stored)

    def removed(self, stored: StoredFile) -> None:
        """This mount deleted a file: hide it at once."""
        self._apply(_without, stored)

    def _apply(self, change: Callable[[Tree, StoredFile], Tree], stored: StoredFile) -> None:
        with self._lock:
            if self._snapshot is not None:
                self._snapshot = change(self._snapshot, stored)
            if self._replay is not None:
                self._replay.append((change, stored))
            self._changed({stored.project})

    def _refresh(self) -> None:
        """List the store in the background; lookups meanwhile get the snapshot shown."""
        started = time.monotonic()
        try:
            tree = self._list()
            with self._lock:
                for change, stored in self._replay:
                    tree = change(tree, stored)
                if started > self._listed_at:  # no newer listing was shown meanwhile
                    self._install(tree, started)
        except PkgfsError as error:
            # The snapshot stays until it expires; then a lookup lists in the
            # foreground and reports what is wrong.
            log.warning("listing the store in the background failed: %s", error)
        finally:
            with self._lock:
                self._replay = None

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
        tree: Tree = {}
        count = 0
        for stored in self.storage.list_files():
            files = tree.setdefault(stored.project, {})
            if stored.filename in files:
                report_skipped(stored.location, f"same file as {files[stored.filename].location}")
                continue
            files[stored.filename] = stored
            count += 1
        log.debug("listed %d files in %d projects in %.3fs",
                  count, len(tree), time.monotonic() - started)
        return tree


def _with(tree: Tree, stored: StoredFile) -> Tree:
    """A new snapshot with a file in it; ``tree`` stays as it was."""
    return {**tree, stored.project: {**tree.get(stored.project, {}), stored.filename: stored}}


def _without(tree: Tree, stored: StoredFile) -> Tree:
    """A new snapshot without a file (nor its project, if it was the last)."""
    files = {name: found for name, found in tree.get(stored.project, {}).items()
             if name != stored.filename}
    others = {project: found for project, found in tree.items() if project != stored.project}
    return {**others, stored.project: files} if files else others
