"""The FUSE layer: translates paths to catalog lookups and pkgfs errors to errno.

Nothing else happens here; the storage knows its layout, the catalog caches.
"""

import errno
import itertools
import logging
import os
import stat
import threading
import time
from typing import Callable

from fuse import FuseOSError, Operations

from .catalog import Catalog
from .errors import AccessDenied, NotFound, PkgfsError, StorageUnavailable
from .storage import Reader, StoredFile

log = logging.getLogger(__name__)

_ERRNO = ((NotFound, errno.ENOENT), (AccessDenied, errno.EACCES),
          (StorageUnavailable, errno.EIO), (PkgfsError, errno.EIO))


class PackageFS(Operations):
    """``/<project>/<filename>``, read from a Catalog."""

    use_ns = True

    def __init__(self, catalog: Catalog, on_ready: Callable[[], None] = lambda: None):
        self.catalog = catalog
        self._on_ready = on_ready
        self._mounted_at = time.time_ns()
        self._readers: dict[int, Reader] = {}
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, operation: str, *args):
        """Every FUSE call passes here: the one place errors become errno values."""
        try:
            return super().__call__(operation, *args)
        except FuseOSError:
            raise
        except PkgfsError as error:
            code = next(code for kind, code in _ERRNO if isinstance(error, kind))
            log.log(logging.DEBUG if code == errno.ENOENT else logging.ERROR,
                    "%s %s: %s", operation, args[0] if args else "", error)
            raise FuseOSError(code) from None
        except Exception:
            log.exception("%s %s failed", operation, args[0] if args else "")
            raise FuseOSError(errno.EIO) from None

    def init(self, path):
        self._on_ready()

    def getattr(self, path, fh=None):
        parts = _split(path)
        if not parts:
            return self._directory_attributes(self._mounted_at)
        files = self._project(parts[0])
        if len(parts) == 1:
            newest = max((stored.mtime for stored in files.values()), default=0)
            return self._directory_attributes(int(newest * 1e9) or self._mounted_at)
        return self._file_attributes(self._file(files, parts))

    def readdir(self, path, fh):
        parts = _split(path)
        if not parts:
            names = self.catalog.tree().keys()
        elif len(parts) == 1:
            names = self._project(parts[0]).keys()
        else:
            raise FuseOSError(errno.ENOTDIR)
        return [".", "..", *names]

    def open(self, path, flags):
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise FuseOSError(errno.EROFS)
        parts = _split(path)
        stored = self._file(self._project(parts[0]), parts)
        reader = self.catalog.storage.open_reader(stored)
        with self._lock:
            handle = next(self._handles)
            self._readers[handle] = reader
        return handle

    def read(self, path, size, offset, fh):
        return self._readers[fh].read(offset, size)

    def release(self, path, fh):
        with self._lock:
            reader = self._readers.pop(fh)
        reader.close()

    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    def _project(self, project: str) -> dict[str, StoredFile]:
        files = self.catalog.project(project)
        if files is None:
            raise FuseOSError(errno.ENOENT)
        return files

    @staticmethod
    def _file(files: dict[str, StoredFile], parts: list[str]) -> StoredFile:
        if len(parts) != 2 or parts[1] not in files:
            raise FuseOSError(errno.ENOENT)
        return files[parts[1]]

    @staticmethod
    def _directory_attributes(mtime_ns: int) -> dict:
        return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_size": 4096,
                "st_uid": os.getuid(), "st_gid": os.getgid(),
                "st_mtime": mtime_ns, "st_ctime": mtime_ns, "st_atime": mtime_ns}

    @staticmethod
    def _file_attributes(stored: StoredFile) -> dict:
        mtime_ns = int(stored.mtime * 1e9)
        return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": stored.size,
                "st_blocks": (stored.size + 511) // 512,
                "st_uid": os.getuid(), "st_gid": os.getgid(),
                "st_mtime": mtime_ns, "st_ctime": mtime_ns, "st_atime": mtime_ns}


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
