"""The cached listing of a store: project -> filename -> StoredFile."""

import logging
import threading
import time
from typing import Callable

from cachetools import TTLCache

from .errors import PkgfsError
from .storage import Storage, StoredFile, report_skipped

log = logging.getLogger(__name__)

Tree = dict[str, dict[str, StoredFile]]


class Catalog:
    """Lists the whole store at most once per ``ttl`` seconds.

    One listing answers every ``ls`` and ``stat`` until it expires: on S3 that
    is one LIST request per 1000 objects and no request per file. A listing
    used when it is half its ``ttl`` old is listed again in the background, so
    a mount in use never waits for a listing, and none is shown past ``ttl``.
    """

    def __init__(self, storage: Storage, ttl: float):
        self.storage = storage
        self.ttl = ttl
        self._cache: TTLCache = TTLCache(maxsize=1, ttl=ttl)
        self._listed_at = 0.0  # time.monotonic() when the cached listing began
        # Held while listing in the foreground, so that concurrent lookups
        # wait for one listing instead of each starting its own.
        self._lock = threading.Lock()
        self._refreshing = False
        # Goes up whenever what the catalog shows may have changed: pages made
        # from it are good while it stays the same, and a background listing
        # that began before a change (this mount's own write) is dropped.
        self.generation = 0
        self._shown: Tree | None = None  # the listing last shown, to tell what changed
        self._listeners: list[Callable[[set[str]], None]] = []

    def counts(self) -> tuple[int, int]:
        """Files and projects of the listing shown now (none listed yet: zeros)."""
        with self._lock:
            shown = self._shown or {}
            return sum(len(files) for files in shown.values()), len(shown)

    def listing_age(self) -> float | None:
        """Seconds since the listing shown now began; None before the first."""
        return time.monotonic() - self._listed_at if self._shown is not None else None

    def on_change(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener`` with the projects whose files changed, whenever some did.

        Called with the catalog's lock held: a listener must return at once.
        """
        self._listeners.append(listener)

    def tree(self) -> Tree:
        with self._lock:
            tree = self._cache.get("tree")
            if tree is None:
                started = time.monotonic()
                tree = self._install(self._list(), started)
            elif time.monotonic() - self._listed_at >= self.ttl / 2 and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="catalog-refresh",
                                 daemon=True).start()
            return tree

    def project(self, project: str) -> dict[str, StoredFile] | None:
        return self.tree().get(project)

    def file(self, project: str, filename: str) -> StoredFile | None:
        return self.tree().get(project, {}).get(filename)

    def added(self, stored: StoredFile) -> None:
        """This mount stored a file: show it at once, without listing the store again."""
        with self._lock:
            tree = self._cache.get("tree")
            if tree is not None:
                tree.setdefault(stored.project, {})[stored.filename] = stored
            self._changed({stored.project})

    def removed(self, stored: StoredFile) -> None:
        """This mount deleted a file: hide it at once."""
        with self._lock:
            files = self._cache.get("tree", {}).get(stored.project)
            if files is not None:
                files.pop(stored.filename, None)
                if not files:
                    del self._cache["tree"][stored.project]
            self._changed({stored.project})

    def _refresh(self) -> None:
        """List the store in the background; lookups meanwhile get the cached listing."""
        started, generation = time.monotonic(), self.generation
        try:
            tree = self._list()
            with self._lock:
                if generation == self.generation and started > self._listed_at:
                    self._install(tree, started)
        except PkgfsError as error:
            # The cached listing stays until it expires; then a lookup lists
            # in the foreground and reports what is wrong.
            log.warning("listing the store in the background failed: %s", error)
        finally:
            with self._lock:
                self._refreshing = False

    def _install(self, tree: Tree, started: float) -> Tree:
        if self._shown is not None:
            changed = {project for project in self._shown.keys() | tree.keys()
                       if self._shown.get(project) != tree.get(project)}
            if changed:
                self._changed(changed)
        self._cache["tree"] = self._shown = tree
        self._listed_at = started
        return tree

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
