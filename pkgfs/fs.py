"""The FUSE layer: translates paths to PackageTree calls and pkgfs errors to errno.

Nothing else happens here; the tree holds the rules, the storage its layout,
``kernel_cache`` keeps what the kernel caches of pages true.
"""

import errno
import itertools
import logging
import os
import stat
import threading
from typing import Callable

from cachetools import LRUCache
import fuse
from fuse import FuseOSError, Operations

from .errors import (
    AccessDenied,
    AlreadyExists,
    Busy,
    ChangeInPlace,
    CrossDevice,
    Generated,
    InvalidName,
    NotEmpty,
    NotFound,
    NotOpenForWriting,
    PkgfsError,
    ReadOnly,
    StorageUnavailable,
)
from .kernel_cache import KernelCache
from .nodes import Attributes, Handle
from .tree import PackageTree

log = logging.getLogger(__name__)

_ERRNO = ((NotFound, errno.ENOENT), (AccessDenied, errno.EACCES),
          (AlreadyExists, errno.EEXIST), (InvalidName, errno.EINVAL),
          (NotEmpty, errno.ENOTEMPTY), (ReadOnly, errno.EROFS), (CrossDevice, errno.EXDEV),
          (Generated, errno.EPERM), (ChangeInPlace, errno.EPERM), (Busy, errno.EBUSY),
          (NotOpenForWriting, errno.EBADF),
          (StorageUnavailable, errno.EIO), (PkgfsError, errno.EIO))
# Refusals a user caused and should see in the log; ENOENT is a lookup, not news.
_QUIET = (errno.ENOENT,)
# What a copy in calls: a refusal of one is a copy refused.
_WRITING = ("create", "open", "write", "flush", "fsync", "rename", "release")


class PackageFS(Operations):
    """``/<project>/<filename>`` of a PackageTree."""

    use_ns = True
    # Reads, writes and closes of a file removed while open come with no path
    # (hard_remove): they go by handle, as they do anyway.
    flag_nullpath_ok = True
    # Calls that have nothing to do here are not offered to libfuse at all, so that they
    # never cost a trip through the daemon: folders open and close without it (ls -lR
    # opens one per project), the kernel takes locks itself, and extended attributes
    # answer ENOSYS once, after which the kernel stops asking (listing them gives none).
    opendir = releasedir = fsyncdir = access = lock = bmap = ioctl = None
    getxattr = setxattr = removexattr = None

    def __init__(self, tree: PackageTree, on_ready: Callable[[], None] = lambda: None):
        self.tree = tree
        self._on_ready = on_ready
        self._kernel = KernelCache()
        tree.catalog.on_change(self._kernel.forget_projects)
        self._open: dict[int, Handle] = {}
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
            if operation in _WRITING and code not in _QUIET:
                self.tree.figures.refused()
            raise FuseOSError(code) from None
        except OSError as error:
            log.warning("%s %s: %s", operation, args[0] if args else "", error)
            raise FuseOSError(error.errno or errno.EIO) from None
        except Exception:
            log.exception("%s %s failed", operation, args[0] if args else "")
            raise FuseOSError(errno.EIO) from None

    def init(self, path):
        self._kernel.attach()
        self._on_ready()

    def destroy(self, path):
        self._kernel.close()
        self.tree.close()

    # --- Looking ---------------------------------------------------------

    def getattr(self, path, fi=None):
        opened = self._open.get(fi.fh) if fi else None  # fi: libfuse's file info, or none
        if opened is not None:
            # fstat, or the kernel asking the size of an open file before it reads past
            # what it knows: the version open, though another has replaced it by now.
            return _stat(opened.attributes())
        if path is None:
            raise FuseOSError(errno.ENOENT)  # removed while open, asked without its handle
        parts = _split(path)
        attributes = self.tree.node(parts).attributes()
        if parts and attributes.folder:
            self._kernel.seen_folder(parts[0], self.tree.resolve(parts)[0])
        return _stat(attributes)

    def readlink(self, path):
        return self.tree.node(_split(path)).attributes().link

    def readdir(self, path, fh):
        """Names with their type (d_type), so that find and ls --color need no stat of each."""
        return [".", "..", *((name, _FOLDER if folder else _FILE, 0)
                             for name, folder in self.tree.entries(_split(path)))]

    def statfs(self, path):
        """The store's space, or, for S3, large numbers as s3ql and mountpoint-s3 give, so
        that df and free-space checks let copies through."""
        total, free = self.tree.catalog.storage.capacity() or (1 << 50, 1 << 50)
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": total // 4096,
                "f_bfree": free // 4096, "f_bavail": free // 4096, "f_files": 1 << 32,
                "f_ffree": 1 << 32, "f_favail": 1 << 32, "f_namemax": 255}

    # --- Files -----------------------------------------------------------

    # The operations below get libfuse's file info (raw_fi): ``fi.fh`` is our handle.

    def open(self, path, fi):
        writing = fi.flags & os.O_ACCMODE != os.O_RDONLY
        truncating = bool(fi.flags & os.O_TRUNC) and not fi.flags & os.O_APPEND
        handle = self.tree.node(_split(path)).open(
            writing=writing, truncating=truncating, process=self._caller() if writing else None)
        fi.fh = self._handle(handle)
        attributes = handle.attributes()
        if attributes.version is not None:
            with self._lock:  # cachetools caches are not thread-safe
                fi.keep_cache = self._opened_as.get(path) == attributes.version
                self._opened_as[path] = attributes.version

    def create(self, path, mode, fi):
        fi.fh = self._handle(self.tree.create(_split(path), writer=self._caller()))

    def read(self, path, size, offset, fi):
        return self._open[fi.fh].read(offset, size)

    def write(self, path, data, offset, fi):
        return self._open[fi.fh].write(data, offset)

    def truncate(self, path, length, fi=None):
        if fi is not None:
            return self._open[fi.fh].truncate(length)
        self.tree.truncate(_split(path), length)

    def flush(self, path, fi):
        """A close of one of the descriptors of a handle. The writer's own close stores the
        file, whole; the closes of processes that inherited the descriptor (``(cat a; cat b)
        > f``) do not, nor do those of readers."""
        opened = self._open[fi.fh]
        # Only a writer's handle asks who closes it: finding out costs a read of /proc.
        if opened.writer is not None and opened.closed_by(self._caller()):
            # The pages a copy changed are new to whoever reads them next.
            self._kernel.wait_until_told()

    def fsync(self, path, datasync, fi):
        self._open[fi.fh].sync()

    def release(self, path, fi):
        with self._lock:
            opened = self._open.pop(fi.fh)
        opened.release()

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

    def _handle(self, opened: Handle) -> int:
        with self._lock:
            handle = next(self._handles)
            self._open[handle] = opened
        return handle

    @staticmethod
    def _caller() -> int:
        """The process that made the current request (FUSE names its thread)."""
        return _process_of(fuse.fuse_get_context()[2])


def _process_of(thread_id: int) -> int:
    """The process a thread belongs to: FUSE names the thread that made a request."""
    try:
        with open(f"/proc/{thread_id}/status") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass  # gone already
    return thread_id


def _stat(attributes: Attributes) -> dict:
    if attributes.folder:
        mode, links = stat.S_IFDIR | 0o755, 2
    elif attributes.link is not None:
        mode, links = stat.S_IFLNK | 0o777, 1
    else:
        mode, links = stat.S_IFREG | (0o644 if attributes.writable else 0o444), 1
    mtime_ns = int(attributes.mtime * 1e9)
    return {"st_mode": mode, "st_nlink": links, "st_size": attributes.size,
            "st_blocks": (attributes.size + 511) // 512, "st_uid": os.getuid(),
            "st_gid": os.getgid(), "st_mtime": mtime_ns, "st_ctime": mtime_ns,
            "st_atime": mtime_ns}


_FOLDER, _FILE = {"st_mode": stat.S_IFDIR}, {"st_mode": stat.S_IFREG}


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
