"""The one protocol between the filesystem layer and the storage backends, and the backends:
``file`` (a pypicloud file store) and ``s3`` (its S3 layout; ``s3_reader`` reads objects).

The protocol:

A backend knows its layout (LAYOUT.md) and nothing about FUSE. It raises
the errors of ``pkgfs.errors`` and nothing else, so the filesystem layer has
one place that turns them into errno values.
"""

import abc
import logging
import sys
from dataclasses import dataclass
from typing import Iterator

from cachetools import LRUCache

from ..errors import Changed
from ..names import NotADistribution, is_project_name, normalize, parse_filename

log = logging.getLogger(__name__)

# Locations already reported: each is logged once, not at every listing.
_reported: LRUCache = LRUCache(maxsize=100_000)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One distribution file in the store, as the mount shows it. A listing hands one over
    per file (the catalog keeps them in columns, and makes one again when asked): slots,
    and one string per project (interned), keep each small."""

    project: str  # PEP 503 normalized
    filename: str
    size: int
    mtime: float  # seconds since the epoch
    location: str  # where the backend keeps it: a path or an object key
    revision: str = ""  # what names this content (an S3 ETag): a read never mixes two


@dataclass(frozen=True)
class Fetched:
    """Some bytes of a stored file, and the metadata stored with it, from one request."""

    data: bytes
    metadata: dict[str, str]  # keys spelled with ``_``; empty if it has none


class Reader(abc.ABC):
    """An open distribution file. Called from several FUSE threads at once."""

    # The version of a stored file it reads (its size and time, whatever the listing
    # says by now); None for what is not a stored file.
    stored: StoredFile | None = None

    @abc.abstractmethod
    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; fewer only at the end of the file."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the reader holds."""


class Storage(abc.ABC):
    """A pypicloud-style package store."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise a StorageError now, with a one-line reason, if the store cannot be used."""

    @abc.abstractmethod
    def list_files(self) -> Iterator[StoredFile]:
        """Every distribution file in the store; anything else in it is skipped."""

    @abc.abstractmethod
    def open_reader(self, stored: StoredFile) -> Reader:
        """A reader of the exact stored bytes; NotFound if the file is gone."""

    def open_listed(self, stored: StoredFile) -> Reader:
        """A reader of the very version listed; Changed if another has replaced it since
        (``open_reader`` opens whatever is there, and says which in ``Reader.stored``)."""
        reader = self.open_reader(stored)
        if reader.stored is not None and reader.stored != stored:
            reader.close()
            raise Changed(f"{stored.location} changed since it was listed")
        return reader

    @abc.abstractmethod
    def store(self, project: str, filename: str, source: str, metadata: dict[str, str], *,
              replace: bool) -> StoredFile:
        """Store the file at ``source`` with its metadata; the StoredFile of those bytes.

        Atomic: until it returns, nobody sees the new file; if it raises,
        nothing of it is left in the store. Without ``replace``, AlreadyExists
        if the name is taken, whoever took it and whenever: of two writers
        of one name, one wins. Changed if the file was stored and at once
        replaced by another writer: stored, but not as these bytes.
        """

    @abc.abstractmethod
    def find(self, project: str, filename: str) -> StoredFile | None:
        """The file stored under a name now, asked of the store itself (not a listing)."""

    @abc.abstractmethod
    def delete(self, stored: StoredFile) -> None:
        """Remove a file and its metadata."""

    @abc.abstractmethod
    def read_metadata(self, stored: StoredFile) -> dict[str, str]:
        """The stored metadata of a file, keys spelled with ``_``; empty if it has none."""

    @abc.abstractmethod
    def fetch(self, stored: StoredFile, start: int, length: int) -> Fetched:
        """Up to ``length`` bytes from ``start`` (fewer at the end), with the file's stored
        metadata, in one request. NotFound if the file is gone, Changed if it is no longer
        the content that was listed."""

    @abc.abstractmethod
    def location(self, project: str, filename: str) -> str:
        """Where this backend puts a file of that name (a listing may find others)."""

    def capacity(self) -> tuple[int, int] | None:
        """Bytes in all and free, where the store has a size (a filesystem); else None."""
        return None

    def url(self, stored: StoredFile, expires_in: int) -> str | None:
        """A URL that serves the file for ``expires_in`` seconds, if the store has such."""
        return None


def stored_file(project_folder: str, filename: str, size: int, mtime: float,
                location: str, revision: str = "") -> StoredFile | None:
    """The StoredFile for a file found in the store, or None if it is no distribution."""
    try:
        parse_filename(filename)
    except NotADistribution as error:
        return report_skipped(location, str(error))
    project = sys.intern(normalize(project_folder))
    if not is_project_name(project):
        return report_skipped(location, f"{project_folder!r} is not a project name")
    return StoredFile(project, filename, size, mtime, location, revision)


def report_skipped(location: str, reason: str) -> None:
    """Log, once per location, why something in the store is not shown."""
    report_once(location, f"not shown: {location!r}: {reason}", logging.DEBUG)


def report_once(key: str, message: str, level: int = logging.WARNING) -> None:
    """Log a message about something in the store once (per key), not at every listing
    or page."""
    if key not in _reported:
        _reported[key] = True
        log.log(level, "%s", message)
