"""pypicloud's file storage: ``<dir>/<project>/<version>/<filename>`` beside ``<filename>.meta``."""

import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterator

from ..errors import AlreadyExists, NotFound, StorageError, StorageUnavailable
from ..names import parse_filename
from . import Fetched, Reader, Storage, StoredFile, report_once, report_skipped, stored_file

log = logging.getLogger(__name__)


class FileStorage(Storage):
    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)

    def check(self) -> None:
        if not os.path.isdir(self.directory):
            raise StorageError(
                f"storage.dir {self.directory} is not a directory: create it or fix storage.dir")
        if not os.access(self.directory, os.R_OK | os.X_OK):
            raise StorageError(f"storage.dir {self.directory} is not readable by this user")

    def capacity(self) -> tuple[int, int]:
        space = os.statvfs(self.directory)
        return space.f_blocks * space.f_frsize, space.f_bavail * space.f_frsize

    def list_files(self) -> Iterator[StoredFile]:
        if not os.path.isdir(self.directory):  # removed under the mount: never an empty mount
            raise StorageUnavailable(f"storage.dir {self.directory} does not exist any more: "
                                     "make it again, or mount another")
        for project in _subdirectories(self.directory):
            for version in _subdirectories(project.path):
                yield from self._files_in(project.name, version.path)

    def _files_in(self, project: str, version_dir: str) -> Iterator[StoredFile]:
        for entry in _scandir(version_dir):
            # Hidden names are temporary files; .meta files are metadata.
            if entry.name.startswith("."):
                _remove_if_left_by_a_dead_writer(entry)
                continue
            if entry.name.endswith(".meta"):
                continue
            # Symlinks are not followed: nothing outside storage.dir is ever shown.
            if not entry.is_file(follow_symlinks=False):
                report_skipped(entry.path, "not a regular file")
                continue
            stat = entry.stat(follow_symlinks=False)
            found = stored_file(project, entry.name, stat.st_size, stat.st_mtime, entry.path)
            if found is not None:
                yield found

    def open_reader(self, stored: StoredFile) -> Reader:
        try:
            fd = os.open(stored.location, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"{stored.location} is gone") from None
        except OSError as error:
            raise StorageError(f"cannot open {stored.location}: {error.strerror}") from None
        return FileReader(fd, stored)

    def location(self, project: str, filename: str) -> str:
        return os.path.join(self.directory, project, parse_filename(filename).version, filename)

    def store(self, project: str, filename: str, source: str, metadata: dict[str, str], *,
              replace: bool) -> StoredFile:
        target = self.location(project, filename)
        folder = os.path.dirname(target)
        # As pypicloud: each file is written under a hidden name, then put in
        # place whole. Without replace, both are put in place by link(), which
        # fails if the name is taken: of two writers one wins, and no .meta is
        # ever put beside another writer's file (see _publish_new).
        meta_temporary = _temporary(folder, ".metadata.")
        package_temporary = _temporary(folder, f".{filename}.")
        try:
            os.makedirs(folder, exist_ok=True)
            _write_json(meta_temporary, metadata)
            shutil.copyfile(source, package_temporary)
            ours = os.stat(package_temporary)
            if replace:
                os.rename(meta_temporary, target + ".meta")
                os.rename(package_temporary, target)
            else:
                _publish_new(package_temporary, meta_temporary, target, ours)
        except FileExistsError:
            raise AlreadyExists(f"{project}/{filename} is stored already") from None
        except OSError as error:
            self._remove_empty_folders(folder)
            raise StorageError(f"cannot store {filename} in {folder}: {error.strerror}") from None
        finally:
            _remove(meta_temporary, package_temporary)  # after link(): second names
        return StoredFile(project, filename, ours.st_size, ours.st_mtime, target)

    def find(self, project: str, filename: str) -> StoredFile | None:
        path = self.location(project, filename)
        try:
            stat = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return StoredFile(project, filename, stat.st_size, stat.st_mtime, path)

    def delete(self, stored: StoredFile) -> None:
        try:
            os.unlink(stored.location)
        except FileNotFoundError:
            raise NotFound(f"{stored.location} is gone") from None
        except OSError as error:
            raise StorageError(f"cannot delete {stored.location}: {error.strerror}") from None
        Path(stored.location + ".meta").unlink(missing_ok=True)
        self._remove_empty_folders(os.path.dirname(stored.location))

    def read_metadata(self, stored: StoredFile) -> dict[str, str]:
        return _read_meta(stored.location + ".meta")

    def fetch(self, stored: StoredFile, start: int, length: int) -> Fetched:
        reader = self.open_listed(stored)
        try:
            return Fetched(reader.read(start, length), self.read_metadata(stored))
        finally:
            reader.close()

    def _remove_empty_folders(self, version_folder: str) -> None:
        """Remove the version folder, then the project folder, if empty, as pypicloud does."""
        project_folder = os.path.dirname(version_folder)
        if os.path.dirname(project_folder) != self.directory:
            return  # not <dir>/<project>/<version>: not ours to remove
        for folder in (version_folder, project_folder):
            try:
                os.rmdir(folder)
            except OSError:
                return  # not empty, or already gone


class FileReader(Reader):
    def __init__(self, fd: int, listed: StoredFile):
        self._fd = fd
        # What the descriptor holds: the listed file, or the one that replaced it since.
        opened = os.fstat(fd)
        self.stored = dataclasses.replace(listed, size=opened.st_size, mtime=opened.st_mtime)

    def read(self, offset: int, size: int) -> bytes:
        try:
            return os.pread(self._fd, size, offset)
        except OSError as error:
            raise StorageError(f"read failed: {error.strerror}") from None

    def close(self) -> None:
        os.close(self._fd)


# pkgfs's own temporaries (see store): ".metadata.<hex>" and ".<filename>.<hex>".
_OUR_TEMPORARY = re.compile(r"^\.(metadata|.+)\.[0-9a-f]{16}$")
# No copy into place takes this long: a temporary this old was left by a writer that died.
LEFT_BEHIND_AFTER = 3600.0


def _left_behind(stat: os.stat_result) -> bool:
    """Written so long ago that its writer, if it was still writing, has died."""
    return time.time() - stat.st_mtime > LEFT_BEHIND_AFTER


def _remove_if_left_by_a_dead_writer(entry: os.DirEntry) -> None:
    if not _OUR_TEMPORARY.match(entry.name):
        return  # someone else's hidden file: not ours to remove
    try:
        if _left_behind(entry.stat(follow_symlinks=False)):
            os.unlink(entry.path)
            log.info("removed %s, left by a writer that died", entry.path)
    except FileNotFoundError:
        pass  # its writer, or another mount, got there first


def _publish_new(package_temporary: str, meta_temporary: str, target: str,
                 ours: os.stat_result) -> None:
    """Put a new file and its .meta in place, or neither. pypicloud (and a replacing
    pkgfs) puts a .meta in place first, writes the file, then renames it over whatever is
    there: a .meta found without its file is an upload in progress, whose file would land
    beside our .meta or over our file. So the file goes in only where no .meta is, the
    .meta only where none appeared meanwhile; else ours is taken back."""
    meta = target + ".meta"
    being_stored = AlreadyExists(f"{target} is being stored by another writer (its .meta is "
                                 f"in place, the file not yet); if nobody is, remove {meta}")
    if not os.path.exists(target) and _being_written(meta):
        raise being_stored
    os.link(package_temporary, target)
    try:
        os.link(meta_temporary, meta)
    except FileExistsError:
        if _being_written(meta):
            _withdraw(target, ours)
            raise being_stored from None
        os.rename(meta_temporary, meta)  # left by a writer that died long ago


def _being_written(meta: str) -> bool:
    try:
        return not _left_behind(os.stat(meta))
    except FileNotFoundError:
        return False


def _withdraw(target: str, ours: os.stat_result) -> None:
    """Take our file out of place: moved aside first, so that a file another writer
    renamed there meanwhile is put back, never removed."""
    aside = _temporary(os.path.dirname(target), f".{os.path.basename(target)}.")
    os.rename(target, aside)
    try:
        if not _same_file(os.stat(aside), ours):
            os.link(aside, target)
    except FileExistsError:
        pass  # yet another file is in place: theirs
    finally:
        os.unlink(aside)


def _same_file(one: os.stat_result, other: os.stat_result) -> bool:
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def _remove(*paths: str) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def _temporary(folder: str, prefix: str) -> str:
    return os.path.join(folder, prefix + secrets.token_hex(8))


# A pypicloud .meta holds a few short strings; anything far bigger is not one.
_META_LIMIT = 1 << 20


def _read_meta(path: str) -> dict[str, str]:
    """The metadata in a .meta file: its string values; empty if it has none or is malformed."""
    try:
        with open(path, "rb") as meta_file:
            raw = meta_file.read(_META_LIMIT + 1)
        if len(raw) > _META_LIMIT:
            raise ValueError(f"larger than {_META_LIMIT} bytes")
        metadata = json.loads(raw)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as error:
        return _unreadable(path, str(error))
    if not isinstance(metadata, dict):
        return _unreadable(path, "not a JSON object")
    return {str(key): value for key, value in metadata.items() if isinstance(value, str) and value}


def _unreadable(path: str, reason: str) -> dict[str, str]:
    report_once(path, f"{path} is unreadable metadata ({reason}): its file is shown as if it "
                      "had none, and hashed for the index")
    return {}


def _write_json(path: str, metadata: dict[str, str]) -> None:
    with open(path, "w", encoding="utf-8") as meta_file:
        json.dump(metadata, meta_file)


def _subdirectories(path: str) -> Iterator[os.DirEntry]:
    for entry in _scandir(path):
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield entry
        else:
            report_skipped(entry.path, "not a directory where the layout has one")


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        return []  # removed between listing its parent and now
    except OSError as error:
        raise StorageError(f"cannot list {path}: {error.strerror}") from None
