"""What the mount shows and what a write may do: stored files, files being written, projects.

Paths come in split (``["my-pkg", "my_pkg-1.0.tar.gz"]``); errors go out as
pkgfs errors. Nothing here knows FUSE.
"""

import errno
import logging
import threading
import time
from dataclasses import dataclass

from .catalog import Catalog
from .errors import (
    AlreadyExists,
    Busy,
    Changed,
    ChangeInPlace,
    CrossDevice,
    InvalidName,
    NotEmpty,
    NotFound,
    ReadOnly,
    StagingFailed,
)
from .index import GeneratedFile, PageLink, SimpleIndex
from .metadata import package_metadata
from .names import NotADistribution, is_project_name, normalize, parse_filename
from .staging import StagedFile, StagingArea
from .nodes import (Attributes, Folder, LinkNode, Node, PageNode, StagedHandle, StagedNode,
                    StoredNode, generated_error, staged_attributes)
from .status import Figures
from .storage import StoredFile

log = logging.getLogger(__name__)

ROOT = ""  # the project of what is copied to the mount's root


@dataclass(frozen=True)
class Directory:
    mtime: float


def is_temporary_name(name: str) -> bool:
    """Hidden names (rsync's, editors') stay staged until renamed to a distribution."""
    return name.startswith(".")


class PackageTree:
    """The mount's tree: the catalog's files, plus files being written and new projects."""

    def __init__(self, catalog: Catalog, staging_dir: str, *, read_only: bool = False,
                 allow_overwrite: bool = False, index: SimpleIndex | None = None,
                 figures: Figures | None = None):
        self.catalog = catalog
        self.index = index
        self.figures = figures or Figures()
        self.read_only = read_only
        self.allow_overwrite = allow_overwrite
        self._staging = StagingArea(staging_dir)
        self._staged: dict[tuple[str, str], StagedFile] = {}
        self._new_projects: set[str] = set()
        self._lock = threading.RLock()
        self._created_at = time.time()

    def close(self) -> None:
        """Drop what was staged and never stored (the mount is going away)."""
        with self._lock:
            for staged in self._staged.values():
                staged.discard()
            self._staged.clear()
        self._staging.close()

    # --- Looking ---------------------------------------------------------

    def node(self, parts: list[str]) -> Node:
        """What the path is: a folder, a stored file, a file being written, or a page."""
        found = self._lookup(parts)
        if isinstance(found, Directory):
            return Folder(found.mtime)
        if isinstance(found, StagedFile):
            return StagedNode(self, found)
        if isinstance(found, GeneratedFile):
            return PageNode(parts, found)
        if isinstance(found, PageLink):
            return LinkNode(found)
        return StoredNode(self, parts, found)

    def _lookup(self, parts: list[str]) -> \
            Directory | StoredFile | StagedFile | GeneratedFile | PageLink:
        if not parts:
            return Directory(self._created_at)
        if len(parts) > 2:
            raise NotFound("/".join(parts))
        parts = self.resolve(parts)
        generated = self.index.file(parts) if self.index else None
        if generated is not None:
            return generated
        with self._lock:
            staged = self._staged.get(self._key(parts))
        if staged is not None:
            return staged
        if len(parts) == 1:
            files = self.catalog.project(parts[0])
            if files is not None:
                return Directory(files.newest_mtime())
            if parts[0] in self._new_projects:
                return Directory(self._created_at)
            return self._stored_by_name(parts[0])
        files = self.catalog.project(parts[0]) or {}
        if parts[1] in files:
            return files[parts[1]]
        raise NotFound("/".join(parts))

    def resolve(self, parts: list[str]) -> list[str]:
        """The path with its project folder normalized: ``/Flask/`` is the folder of
        ``flask``, as pip's ``/Flask/`` is its page. Only normalized names are listed."""
        folder = parts[0]
        if is_project_name(folder) or (len(parts) == 1 and not self._is_project(normalize(folder))):
            return parts
        return [normalize(folder), *parts[1:]]

    def _is_project(self, name: str) -> bool:
        return self.catalog.project(name) is not None or name in self._new_projects

    def _stored_by_name(self, filename: str) -> StoredFile:
        """A file copied to the root is found there by name once stored (for ``cp -p``, rsync)."""
        try:
            project = parse_filename(filename).project
        except NotADistribution:
            raise NotFound(filename) from None
        stored = self.catalog.file(project, filename)
        if stored is None:
            raise NotFound(filename)
        return stored

    def names(self, parts: list[str]) -> list[str]:
        return [name for name, _ in self.entries(parts)]

    def entries(self, parts: list[str]) -> list[tuple[str, Attributes]]:
        """What a folder lists, in name order, each name with what stat of it gives (so
        that one readdir answers ls -l, with no lookup of each name). The index's files
        are found by name, never listed, so listing costs no request for them."""
        node = self._lookup(parts)
        if not isinstance(node, Directory):
            raise NotADirectoryError(errno.ENOTDIR, "/".join(parts))
        folder = self.resolve(parts)[0] if parts else ROOT
        if folder == ROOT:  # projects, and files being copied to the root
            listed = {project: Folder(files.newest_mtime()).attributes()
                      for project, files in self.catalog.tree().items()}
            for project in self._new_projects - listed.keys():
                listed[project] = Folder(self._created_at).attributes()
        else:
            files = self.catalog.project(folder)
            listed = {name: Attributes(size, mtime)
                      for name, size, mtime in files.sizes_and_times()} if files else {}
        with self._lock:
            staged = [file for (project, _), file in self._staged.items() if project == folder]
        for file in staged:  # over a project of the same name in the root: it is a file now
            listed[file.name] = staged_attributes(file)
        return sorted(listed.items())

    # --- Writing ---------------------------------------------------------

    def create(self, parts: list[str], writer: int) -> StagedHandle:
        """Start a new file, written by the process ``writer``; stored at its close."""
        return StagedHandle(self, self._create(parts), writer)

    def _create(self, parts: list[str]) -> StagedFile:
        self._check_writable()
        parts = self.resolve(parts)
        folder, name = self._target(parts)
        with self._lock:
            if self._key(parts) in self._staged:
                raise AlreadyExists(f"{name} is being written already")
            staged = self._staging.new_file(folder, name)
            self._staged[self._key(parts)] = staged
            staged.opens += 1
        return staged

    def replace(self, parts: list[str], *, truncating: bool, writer: int) -> StagedHandle:
        """A stored file opened for writing: a new file that replaces it whole at close."""
        if not truncating:
            raise ChangeInPlace(f"{'/'.join(parts)} is stored: it can be replaced whole "
                                "(cp, >), never appended to (>>) or changed in place")
        return self.create(parts, writer)

    def truncate(self, parts: list[str], length: int) -> None:
        """truncate(2) by name: of a file being written only; stored files never change."""
        staged = self._lookup(parts)
        if not isinstance(staged, StagedFile):
            raise ChangeInPlace(f"{'/'.join(parts)} is stored: it can be replaced whole, "
                                "never changed in place")
        staged.truncate(length)

    def reopen(self, staged: StagedFile, *, writing: bool) -> StagedFile:
        """Another open of a file being written: to read what is staged, or to write it
        again once its writer has closed it (a temporary waiting for its rename)."""
        with self._lock:
            if writing and staged.writing:
                raise Busy(f"{staged.name} is being written: one writer at a time")
            staged.opens += 1
            staged.writing = staged.writing or writing
        return staged

    def commit(self, staged: StagedFile) -> None:
        """Store what was written, whole: at its writer's close, so that ``close()`` reports
        a failure."""
        if not staged.dirty or is_temporary_name(staged.name):
            return
        self._store(staged, staged.project, staged.name)

    def writer_closed(self, staged: StagedFile) -> None:
        with self._lock:
            staged.writing = False

    def _store(self, staged: StagedFile, folder: str, filename: str) -> None:
        """Store a staged file as ``filename``; copied to the root, it goes to its project."""
        project = folder or parse_filename(filename).project
        if staged.broken:
            raise StagingFailed(f"{filename}: a write to the staging disk failed; "
                                "nothing was stored")
        metadata = package_metadata(staged.path, filename)
        storage = self.catalog.storage
        try:
            stored = storage.store(project, filename, staged.path, metadata,
                                   replace=self.allow_overwrite)
            log.info("stored %s/%s (%d bytes)", project, filename, stored.size)
            self.figures.stored()
        except AlreadyExists as taken:
            stored = self._stored_with_the_same_bytes(project, filename, metadata, taken)
        except Changed as error:  # stored, then replaced at once by another writer
            log.warning("%s: the next listing shows what is there", error)
            stored = None
        staged.dirty, staged.published = False, True
        if stored is None:
            return
        if self.index:  # before the catalog shows it, so no page asks the store
            self.index.copied_in(stored, staged.path, metadata)
        self.catalog.added(stored)

    def _stored_with_the_same_bytes(self, project: str, filename: str,
                                    metadata: dict[str, str], taken: AlreadyExists) -> StoredFile:
        """A name taken by the same bytes: publishing them again succeeds and changes
        nothing, so copies and rsync can run again. Other bytes: File exists."""
        storage = self.catalog.storage
        existing = storage.find(project, filename)
        if existing is None:
            raise taken  # not stored yet: another writer is storing it now
        if storage.read_metadata(existing).get("hash_sha256") == metadata["hash_sha256"]:
            log.info("%s/%s is stored already with the same bytes: nothing to do",
                     project, filename)
            return existing
        raise AlreadyExists(f"{project}/{filename} is stored already, with other bytes, and "
                            "pypi.allow_overwrite is off")

    def release(self, staged: StagedFile) -> None:
        """The last close drops the staging copy, but a temporary's waits for its rename."""
        with self._lock:
            staged.opens -= 1
            still_listed = self._staged.get(self._key_of(staged)) is staged
            waits_for_rename = is_temporary_name(staged.name) and still_listed
            if staged.opens > 0 or waits_for_rename:
                return
            self._forget(staged)

    def delete(self, parts: list[str]) -> None:
        self._check_writable()
        parts = self.resolve(parts)
        node = self._lookup(parts)
        if isinstance(node, (GeneratedFile, PageLink)):
            raise generated_error(parts)
        if isinstance(node, StagedFile):
            with self._lock:
                self._forget(node)
        elif isinstance(node, StoredFile):
            self.catalog.storage.delete(node)
            self.catalog.removed(node)
            log.info("deleted %s/%s", node.project, node.filename)
        else:
            raise IsADirectoryError(errno.EISDIR, "/".join(parts))

    def rename(self, old: list[str], new: list[str]) -> None:
        """Rename a staged file: to a distribution name, that stores it."""
        self._check_writable()
        old, new = self.resolve(old), self.resolve(new)
        staged = self._lookup(old)
        if isinstance(staged, (GeneratedFile, PageLink)):
            raise generated_error(old)
        if not isinstance(staged, StagedFile):
            raise CrossDevice("/".join(old))
        folder, name = self._target(new)
        with self._lock:
            if self._key(new) in self._staged:
                raise AlreadyExists(f"{name} is being written")
        if not is_temporary_name(name):
            self._store(staged, folder, name)
        with self._lock:
            if is_temporary_name(name):
                del self._staged[self._key(old)]
                staged.project, staged.name = folder, name
                self._staged[self._key(new)] = staged
            else:
                self._forget(staged)

    def make_project(self, parts: list[str]) -> None:
        self._check_writable()
        if len(parts) != 1:
            raise InvalidName("projects are folders at the top of the mount")
        name = parts[0]
        if not is_project_name(name):
            raise InvalidName(f"{name!r} is not a normalized project name (PEP 503)")
        if self.catalog.project(name) is not None or name in self._new_projects:
            raise AlreadyExists(f"project {name} exists")
        self._new_projects.add(name)

    def remove_project(self, parts: list[str]) -> None:
        self._check_writable()
        parts = self.resolve(parts)
        if len(parts) != 1 or not isinstance(self._lookup(parts), Directory):
            raise NotADirectoryError(errno.ENOTDIR, "/".join(parts))
        if self.names(parts):
            raise NotEmpty(f"project {parts[0]} still has files")
        self._new_projects.discard(parts[0])

    # --- Rules -----------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnly("the mount is read-only")

    def _target(self, parts: list[str]) -> tuple[str, str]:
        """The folder and name of a new file, if a file may have that name there."""
        if not 1 <= len(parts) <= 2:
            raise InvalidName("files go in the root or in a project folder")
        folder, name = (ROOT, parts[0]) if len(parts) == 1 else parts
        if self.index and self.index.is_generated(parts):
            raise generated_error(parts)
        if not name.isprintable() or len(name.encode()) > 255:
            raise InvalidName(f"{name!r} has characters a file name cannot have")
        if folder != ROOT and not isinstance(self._lookup([folder]), Directory):
            raise NotFound(folder)
        if is_temporary_name(name):
            return folder, name  # staged until renamed
        try:
            project = parse_filename(name).project
        except NotADistribution as error:
            raise InvalidName(str(error)) from None
        if folder not in (ROOT, project):
            raise InvalidName(f"{name} belongs to project {project}, not {folder}")
        return folder, name

    @staticmethod
    def _key(parts: list[str]) -> tuple[str, str]:
        return (ROOT, parts[0]) if len(parts) == 1 else (parts[0], parts[1])

    @staticmethod
    def _key_of(staged: StagedFile) -> tuple[str, str]:
        return staged.project, staged.name

    def _forget(self, staged: StagedFile) -> None:
        """Unlist a staged file; its copy goes at once, or at its last close if still open."""
        if self._staged.get(self._key_of(staged)) is staged:
            del self._staged[self._key_of(staged)]
        if staged.opens == 0:
            staged.discard()
