"""What a path of the mount is, in one small protocol: a node has ``attributes()`` and
``open()``; what ``open()`` gives, a handle, reads, writes and closes.

``PackageTree.node()`` answers one of these for each path, so the FUSE layer asks
them and never sorts types. Nothing here knows FUSE.
"""

from __future__ import annotations

import abc
import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import Generated, NotOpenForWriting, PkgfsError
from .index import GeneratedFile, PageLink
from .staging import StagedFile
from .storage import Reader, StoredFile

if TYPE_CHECKING:
    from .tree import PackageTree

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attributes:
    size: int
    mtime: float
    folder: bool = False
    writable: bool = True
    # What names these exact bytes: a file opened again as the same version may be read
    # from what the kernel kept of the last open. None: nothing may be kept.
    version: object = None
    link: str | None = None  # a symbolic link's target


class Handle(abc.ABC):
    """An open file. Reads only, unless the node's ``open`` made it to write."""

    # The process that created the file this handle writes: its close stores the file.
    writer: int | None = None

    @abc.abstractmethod
    def attributes(self) -> Attributes:
        """What fstat of the handle gives: the version open, whatever the name shows now."""

    @abc.abstractmethod
    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``."""

    def write(self, data: bytes, offset: int) -> int:
        raise NotOpenForWriting("the file is open for reading only")

    def truncate(self, length: int) -> None:
        raise NotOpenForWriting("the file is open for reading only")

    def closed_by(self, process: int) -> bool:
        """One of the handle's descriptors was closed by ``process``: if it is the writer's,
        what it wrote is stored now (True), and a failure is told to that close."""
        return False

    def sync(self) -> None:
        """fsync: what is written is stored once this returns."""

    def release(self) -> None:
        """The last descriptor of the handle is closed."""


class Node(Protocol):
    def attributes(self) -> Attributes:
        """What stat of the path gives."""

    def open(self, *, writing: bool, truncating: bool, process: int | None) -> Handle:
        """A handle of the file; ``process`` opened it, and writes it if ``writing``."""


class Folder:
    def __init__(self, mtime: float):
        self.mtime = mtime

    def attributes(self) -> Attributes:
        return Attributes(4096, self.mtime, folder=True)

    def open(self, *, writing: bool, truncating: bool, process: int | None) -> Handle:
        raise IsADirectoryError(errno.EISDIR, "a project folder")


class StoredNode:
    """A file in the store. Opened to write, it is replaced whole at its writer's close."""

    def __init__(self, tree: PackageTree, parts: list[str], stored: StoredFile):
        self.tree, self.parts, self.stored = tree, parts, stored

    def attributes(self) -> Attributes:
        return stored_attributes(self.stored)

    def open(self, *, writing: bool, truncating: bool, process: int | None) -> Handle:
        if writing:
            return self.tree.replace(self.parts, truncating=truncating, writer=process)
        return StoredHandle(self.tree.catalog.storage.open_reader(self.stored))


class StagedNode:
    """A file being written (or a temporary waiting for its rename)."""

    def __init__(self, tree: PackageTree, staged: StagedFile):
        self.tree, self.staged = tree, staged

    def attributes(self) -> Attributes:
        return staged_attributes(self.staged)

    def open(self, *, writing: bool, truncating: bool, process: int | None) -> Handle:
        self.tree.reopen(self.staged, writing=writing)
        return StagedHandle(self.tree, self.staged, process if writing else None)


class LinkNode:
    """A page's name (``index.json``): a link to its current version."""

    def __init__(self, link: PageLink):
        self.link = link

    def attributes(self) -> Attributes:
        return Attributes(len(self.link.target), self.link.mtime, writable=False,
                          link=self.link.target)

    def open(self, *, writing: bool, truncating: bool, process: int | None) -> Handle:
        raise NotImplementedError("the kernel follows a link; it never opens one")


class PageNode:
    """A file the index generates: read only."""

    def __init__(self, parts: list[str], page: GeneratedFile):
        self.parts, self.page = parts, page

    def attributes(self) -> Attributes:
        return page_attributes(self.page)

    def open(self, *, writing: bool, truncating: bool, process: int | None) -> Handle:
        if writing:
            raise generated_error(self.parts)
        return PageHandle(self.page)


def generated_error(parts: list[str]) -> Generated:
    return Generated(f"{'/'.join(parts)} is generated by the index; "
                     "turn it off with pkgfs.index = false")


def stored_attributes(stored: StoredFile) -> Attributes:
    return Attributes(stored.size, stored.mtime, version=stored)


def staged_attributes(staged: StagedFile) -> Attributes:
    return Attributes(staged.size(), staged.mtime)


def page_attributes(page: GeneratedFile) -> Attributes:
    return Attributes(len(page.content), page.mtime, writable=False, version=page.digest)


class StoredHandle(Handle):
    def __init__(self, reader: Reader):
        self.reader = reader

    def attributes(self) -> Attributes:
        return stored_attributes(self.reader.stored)

    def read(self, offset: int, size: int) -> bytes:
        return self.reader.read(offset, size)

    def release(self) -> None:
        self.reader.close()


class PageHandle(Handle):
    """A generated file."""

    def __init__(self, page: GeneratedFile):
        self.page = page

    def attributes(self) -> Attributes:
        return page_attributes(self.page)

    def read(self, offset: int, size: int) -> bytes:
        return self.page.content[offset:offset + size]


class StagedHandle(Handle):
    """A file being written, opened by its writer (``writer`` set) or by a reader, who
    reads what is staged so far and never stores it."""

    def __init__(self, tree: PackageTree, staged: StagedFile, writer: int | None):
        self.tree, self.staged, self.writer = tree, staged, writer

    def attributes(self) -> Attributes:
        return staged_attributes(self.staged)

    def read(self, offset: int, size: int) -> bytes:
        return self.staged.read(offset, size)

    def write(self, data: bytes, offset: int) -> int:
        self._check_writer()
        return self.staged.write(data, offset)

    def truncate(self, length: int) -> None:
        self._check_writer()
        self.staged.truncate(length)

    def closed_by(self, process: int) -> bool:
        # Not by processes that inherited the descriptor (``(cat a; cat b) > f``), nor readers.
        if self.writer is None or process != self.writer:
            return False
        self.tree.writer_closed(self.staged)  # stored now or never: a failure is told now
        self.tree.commit(self.staged)
        return True

    def sync(self) -> None:
        if self.writer is not None:
            self.tree.commit(self.staged)

    def release(self) -> None:
        if self.writer is not None and self.staged.writing:
            self._store_at_release()
        self.tree.release(self.staged)

    def _store_at_release(self) -> None:
        """The writer's process never closed it (it exited, or handed the descriptor on):
        stored now, and a failure can only be logged."""
        self.tree.writer_closed(self.staged)
        try:
            self.tree.commit(self.staged)
        except PkgfsError as error:
            log.warning("storing %s at its last close failed: %s", self.staged.name, error)

    def _check_writer(self) -> None:
        if self.writer is None:
            raise NotOpenForWriting(f"{self.staged.name} is open for reading only")
