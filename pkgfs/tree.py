"""What the mount shows and what a write may do: stored files, files being written, projects.

Paths come in split (``["my-pkg", "my_pkg-1.0.tar.gz"]``); errors go out as
pkgfs errors. Nothing here knows FUSE.
"""

import errno
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass

from .catalog import Catalog
from .errors import (
    AlreadyExists,
    CrossDevice,
    Generated,
    InvalidName,
    NotEmpty,
    NotFound,
    ReadOnly,
    StagingFailed,
)
from .index import GeneratedFile, SimpleIndex
from .metadata import package_metadata
from .names import NotADistribution, is_project_name, parse_filename
from .process import is_pkgfs_daemon
from .storage import StoredFile

log = logging.getLogger(__name__)

ROOT = ""  # the project of what is copied to the mount's root


@dataclass(frozen=True)
class Directory:
    mtime: float


class StagedFile:
    """A file being written: on local disk until it is stored whole."""

    def __init__(self, project: str, name: str, path: str):
        self.project = project  # the folder it was created in: a project, or ROOT
        self.name = name
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.opens = 0
        self.dirty = False
        self.broken = False  # a write failed (disk full): what is staged is not the file
        self.mtime = time.time()

    @property
    def is_temporary(self) -> bool:
        """Hidden names (rsync's, editors') stay staged until renamed to a distribution."""
        return self.name.startswith(".")

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def write(self, data: bytes, offset: int) -> int:
        self.dirty = True
        self.mtime = time.time()
        try:
            written = os.pwrite(self.fd, data, offset)
        except OSError:
            self.broken = True
            raise
        if written < len(data):
            self.broken = True
            raise OSError(errno.ENOSPC, "short write to the staging disk")
        return written

    def truncate(self, length: int) -> None:
        self.dirty = True
        try:
            os.ftruncate(self.fd, length)
        except OSError:
            self.broken = True
            raise

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def discard(self) -> None:
        os.close(self.fd)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _remove_dead_staging(staging_dir: str) -> None:
    """Drop what the staging folders of killed daemons hold: their copies failed anyway."""
    for entry in os.scandir(staging_dir):
        owner = entry.name.split("-")[1] if entry.name.startswith("mount-") else ""
        if owner.isdigit() and not is_pkgfs_daemon(int(owner)):
            shutil.rmtree(entry.path, ignore_errors=True)
            log.info("removed %s, left by a pkgfs daemon that died", entry.path)


class PackageTree:
    """The mount's tree: the catalog's files, plus files being written and new projects."""

    def __init__(self, catalog: Catalog, staging_dir: str, *, read_only: bool = False,
                 allow_overwrite: bool = False, index: SimpleIndex | None = None):
        self.catalog = catalog
        self.index = index
        self.read_only = read_only
        self.allow_overwrite = allow_overwrite
        os.makedirs(staging_dir, mode=0o700, exist_ok=True)
        _remove_dead_staging(staging_dir)
        self._staging = tempfile.mkdtemp(prefix=f"mount-{os.getpid()}-", dir=staging_dir)
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
        shutil.rmtree(self._staging, ignore_errors=True)

    # --- Looking ---------------------------------------------------------

    def node(self, parts: list[str]) -> Directory | StoredFile | StagedFile | GeneratedFile:
        if not parts:
            return Directory(self._created_at)
        if len(parts) > 2:
            raise NotFound("/".join(parts))
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
                return Directory(max(stored.mtime for stored in files.values()))
            if parts[0] in self._new_projects:
                return Directory(self._created_at)
            return self._stored_by_name(parts[0])
        files = self.catalog.project(parts[0]) or {}
        if parts[1] in files:
            return files[parts[1]]
        raise NotFound("/".join(parts))

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
        node = self.node(parts)
        if not isinstance(node, Directory):
            raise NotADirectoryError(errno.ENOTDIR, "/".join(parts))
        folder = parts[0] if parts else ROOT
        with self._lock:
            staged = [name for project, name in self._staged if project == folder]
        if folder == ROOT:
            listed = set(self.catalog.tree()) | self._new_projects
        else:
            listed = set(self.catalog.project(folder) or {})
        if self.index:
            listed.update(self.index.names(folder or None))
        return sorted(listed.union(staged))

    # --- Writing ---------------------------------------------------------

    def create(self, parts: list[str]) -> StagedFile:
        """Start a new file; it is stored when ``commit`` is called (at close)."""
        self._check_writable()
        folder, name = self._target(parts)
        with self._lock:
            if self._key(parts) in self._staged:
                raise AlreadyExists(f"{name} is being written already")
            staged = StagedFile(folder, name, os.path.join(self._staging, secrets.token_hex(8)))
            self._staged[self._key(parts)] = staged
            staged.opens += 1
        return staged

    def reopen(self, staged: StagedFile) -> StagedFile:
        with self._lock:
            staged.opens += 1
        return staged

    def commit(self, staged: StagedFile) -> None:
        """Store what was written (at flush, so that ``close()`` reports a failure)."""
        if not staged.dirty or staged.is_temporary:
            return
        project = staged.project or parse_filename(staged.name).project
        self._store(staged, project, staged.name)

    def _store(self, staged: StagedFile, project: str, filename: str) -> None:
        if staged.broken:
            raise StagingFailed(f"{filename}: a write to the staging disk failed; "
                                "nothing was stored")
        metadata = package_metadata(staged.path, filename)
        stored = self.catalog.storage.store(project, filename, staged.path, metadata)
        staged.dirty = False
        self.catalog.added(stored)
        log.info("stored %s/%s (%d bytes)", project, filename, stored.size)

    def release(self, staged: StagedFile) -> None:
        """The last close drops the staging copy, but a temporary's waits for its rename."""
        with self._lock:
            staged.opens -= 1
            still_listed = self._staged.get(self._key_of(staged)) is staged
            waits_for_rename = staged.is_temporary and still_listed
            if staged.opens > 0 or waits_for_rename:
                return
            self._forget(staged)

    def delete(self, parts: list[str]) -> None:
        self._check_writable()
        node = self.node(parts)
        if isinstance(node, GeneratedFile):
            raise Generated(f"{'/'.join(parts)} is generated by the index; "
                            "turn it off with pkgfs.index = false")
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
        staged = self.node(old)
        if isinstance(staged, GeneratedFile):
            raise Generated(f"{'/'.join(old)} is generated by the index")
        if not isinstance(staged, StagedFile):
            raise CrossDevice("/".join(old))
        folder, name = self._target(new)
        with self._lock:
            if self._key(new) in self._staged:
                raise AlreadyExists(f"{name} is being written")
        if not name.startswith("."):
            self._store(staged, folder or parse_filename(name).project, name)
        with self._lock:
            if name.startswith("."):
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
        if len(parts) != 1 or not isinstance(self.node(parts), Directory):
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
            raise Generated(f"{'/'.join(parts)} is generated by the index; "
                            "turn it off with pkgfs.index = false")
        if not name.isprintable() or len(name.encode()) > 255:
            raise InvalidName(f"{name!r} has characters a file name cannot have")
        if folder != ROOT and not isinstance(self.node([folder]), Directory):
            raise NotFound(folder)
        if name.startswith("."):
            return folder, name  # a temporary name: staged until renamed
        try:
            project = parse_filename(name).project
        except NotADistribution as error:
            raise InvalidName(str(error)) from None
        if folder not in (ROOT, project):
            raise InvalidName(f"{name} belongs to project {project}, not {folder}")
        if not self.allow_overwrite and self.catalog.file(project, name) is not None:
            raise AlreadyExists(f"{project}/{name} is stored already and pypi.allow_overwrite "
                                "is off")
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
