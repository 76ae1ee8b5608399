"""The cached listing of a store: project -> filename -> StoredFile."""

import logging
import threading
import time

from cachetools import TTLCache

from .storage import Storage, StoredFile, report_skipped

log = logging.getLogger(__name__)

Tree = dict[str, dict[str, StoredFile]]


class Catalog:
    """Lists the whole store at most once per ``ttl`` seconds.

    One listing answers every ``ls`` and ``stat`` until it expires: on S3 that
    is one LIST request per 1000 objects and no request per file.
    """

    def __init__(self, storage: Storage, ttl: float):
        self.storage = storage
        self._cache: TTLCache = TTLCache(maxsize=1, ttl=ttl)
        # Held while listing, so that concurrent lookups wait for one listing
        # instead of each starting its own.
        self._lock = threading.Lock()
        # Goes up whenever what the catalog shows may have changed: pages made
        # from it are good while it stays the same.
        self.generation = 0

    def tree(self) -> Tree:
        with self._lock:
            tree = self._cache.get("tree")
            if tree is None:
                tree = self._cache["tree"] = self._list()
                self.generation += 1
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
            self.generation += 1

    def removed(self, stored: StoredFile) -> None:
        """This mount deleted a file: hide it at once."""
        with self._lock:
            files = self._cache.get("tree", {}).get(stored.project)
            if files is not None:
                files.pop(stored.filename, None)
                if not files:
                    del self._cache["tree"][stored.project]
            self.generation += 1

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
