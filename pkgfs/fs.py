"""The FUSE layer: translates paths to PackageTree calls and pkgfs errors to errno.

Nothing else happens here; the tree holds the rules, the storage its layout.
"""

import errno
import itertools
import logging
import os
import stat
import threading
from typing import Callable

from cachetools import LRUCache
from fuse import FuseOSError, Operations

from .errors import (
    AccessDenied,
    AlreadyExists,
    CrossDevice,
    Generated,
    InvalidName,
    NotEmpty,
    NotFound,
    PkgfsError,
    ReadOnly,
    StorageUnavailable,
)
from .storage import Reader
from .index import BytesReader, GeneratedFile
from .tree import Directory, PackageTree, StagedFile

log = logging.getLogger(__name__)

_ERRNO = ((NotFound, errno.ENOENT), (AccessDenied, errno.EACCES),
          (AlreadyExists, errno.EEXIST), (InvalidName, errno.EINVAL),
          (NotEmpty, errno.ENOTEMPTY), (ReadOnly, errno.EROFS), (CrossDevice, errno.EXDEV),
          (Generated, errno.EPERM),
          (StorageUnavailable, errno.EIO), (PkgfsError, errno.EIO))
# Refusals a user caused and should see in the log; ENOENT is a lookup, not news.
_QUIET = (errno.ENOENT,)


class PackageFS(Operations):
    """``/<project>/<filename>`` of a PackageTree."""

    use_ns = True

    def __init__(self, tree: PackageTree, on_ready: Callable[[], None] = lambda: None):
        self.tree = tree
        self._on_ready = on_ready
        self._open: dict[int, Reader | StagedFile] = {}
        # What each file was at its last open: while it is the same, the kernel
        # keeps its pages from one open to the next.
        self._opened_as: LRUCache = LRUCache(maxsize=100_000)
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
            level = logging.DEBUG if code in _QUIET else logging.WARNING
            log.log(level, "%s %s refused: %s", operation, args[0] if args else "", error)
            raise FuseOSError(code) from None
        except OSError as error:
            log.warning("%s %s: %s", operation, args[0] if args else "", error)
            raise FuseOSError(error.errno or errno.EIO) from None
        except Exception:
            log.exception("%s %s failed", operation, args[0] if args else "")
            raise FuseOSError(errno.EIO) from None

    def init(self, path):
        self._on_ready()

    def destroy(self, path):
        self.tree.close()

    # --- Looking ---------------------------------------------------------

    def getattr(self, path, fi=None):
        opened = self._open.get(fi.fh) if fi else None  # fi: libfuse's file info, or none
        if isinstance(opened, BytesReader):
            # fstat of an open page: the size of what it reads, though the page moved on.
            node = opened.generated
        else:
            node = self.tree.node(_split(path))
        if isinstance(node, Directory):
            return _attributes(stat.S_IFDIR | 0o755, 4096, node.mtime, links=2)
        if isinstance(node, StagedFile):
            return _attributes(stat.S_IFREG | 0o644, node.size(), node.mtime)
        if isinstance(node, GeneratedFile):
            return _attributes(stat.S_IFREG | 0o444, len(node.content), node.mtime)
        return _attributes(stat.S_IFREG | 0o644, node.size, node.mtime)

    def readdir(self, path, fh):
        return [".", "..", *self.tree.names(_split(path))]

    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    # --- Files -----------------------------------------------------------

    # The operations below get libfuse's file info (raw_fi): ``fi.fh`` is our handle.

    def open(self, path, fi):
        node = self.tree.node(_split(path))
        if isinstance(node, StagedFile):
            fi.fh = self._handle(self.tree.reopen(node))
        elif fi.flags & os.O_ACCMODE != os.O_RDONLY:
            # Writing over a stored file makes a new one that replaces it at close.
            fi.fh = self._handle(self.tree.create(_split(path)))
        elif isinstance(node, GeneratedFile):
            fi.fh = self._handle(BytesReader(node))
        else:
            fi.fh = self._handle(self.tree.catalog.storage.open_reader(node))
            with self._lock:  # cachetools caches are not thread-safe
                fi.keep_cache = self._opened_as.get(path) == node
                self._opened_as[path] = node

    def create(self, path, mode, fi):
        fi.fh = self._handle(self.tree.create(_split(path)))

    def read(self, path, size, offset, fi):
        return self._open[fi.fh].read(offset, size)

    def write(self, path, data, offset, fi):
        return self._staged(fi.fh).write(data, offset)

    def truncate(self, path, length, fi=None):
        if fi is not None:
            return self._staged(fi.fh).truncate(length)
        node = self.tree.node(_split(path))
        if not isinstance(node, StagedFile):
            raise FuseOSError(errno.EPERM)  # stored files are never changed in place
        node.truncate(length)

    def flush(self, path, fi):
        opened = self._open[fi.fh]
        if isinstance(opened, StagedFile):
            self.tree.commit(opened)

    def fsync(self, path, datasync, fi):
        return self.flush(path, fi)

    def release(self, path, fi):
        with self._lock:
            opened = self._open.pop(fi.fh)
        if isinstance(opened, StagedFile):
            self.tree.release(opened)
        else:
            opened.close()

    def unlink(self, path):
        self.tree.delete(_split(path))

    def rename(self, old, new):
        self.tree.rename(_split(old), _split(new))

    # --- Folders ---------------------------------------------------------

    def mkdir(self, path, mode):
        self.tree.make_project(_split(path))

    def rmdir(self, path):
        self.tree.remove_project(_split(path))

    # --- What a store has no place for succeeds, as copy tools expect ----

    def chmod(self, path, mode):
        self.tree.node(_split(path))

    def chown(self, path, uid, gid):
        self.tree.node(_split(path))

    def utimens(self, path, times=None):
        self.tree.node(_split(path))

    def _handle(self, opened: Reader | StagedFile) -> int:
        with self._lock:
            handle = next(self._handles)
            self._open[handle] = opened
        return handle

    def _staged(self, fh: int) -> StagedFile:
        opened = self._open[fh]
        if not isinstance(opened, StagedFile):
            raise FuseOSError(errno.EBADF)
        return opened


def _attributes(mode: int, size: int, mtime: float, links: int = 1) -> dict:
    mtime_ns = int(mtime * 1e9)
    return {"st_mode": mode, "st_nlink": links, "st_size": size,
            "st_blocks": (size + 511) // 512, "st_uid": os.getuid(), "st_gid": os.getgid(),
            "st_mtime": mtime_ns, "st_ctime": mtime_ns, "st_atime": mtime_ns}


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
