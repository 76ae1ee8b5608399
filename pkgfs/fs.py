"""The FUSE layer: translates paths to PackageTree calls and pkgfs errors to errno.

Nothing else happens here; the tree holds the rules, the storage its layout,
``kernel_cache`` keeps what the kernel caches of pages true.
"""

import errno
import functools
import itertools
import logging
import os
import stat
import threading
from typing import Callable

from cachetools import LRUCache

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
from . import libfuse
from .libfuse import fuse
from .nodes import Attributes, Handle
from .tree import PackageTree

FuseOSError = fuse.FuseOSError

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


def _answered(operation: Callable) -> Callable:
    """Every FUSE call passes here: the one place errors become errno values, and where
    the libfuse thread making the call keeps its Python thread state."""
    name = operation.__name__

    @functools.wraps(operation)
    def answer(self, *args):
        libfuse.keep_thread_state()
        try:
            return operation(self, *args)
        except FuseOSError:
            raise
        except PkgfsError as error:
            code = next(code for kind, code in _ERRNO if isinstance(error, kind))
            level = logging.DEBUG if code in _QUIET else logging.WARNING
            log.log(level, "%s %s refused: %s", name, args[0] if args else "", error)
            if name in _WRITING and code not in _QUIET:
                self.tree.figures.refused()
            raise FuseOSError(code) from None
        except OSError as error:
            log.warning("%s %s: %s", name, args[0] if args else "", error)
            raise FuseOSError(error.errno or errno.EIO) from None
        except Exception:
            log.exception("%s %s failed", name, args[0] if args else "")
            raise FuseOSError(errno.EIO) from None
    return answer


class PackageFS(fuse.Operations):
    """``/<project>/<filename>`` of a PackageTree."""

    use_ns = True
    # Calls that have nothing to do here are not offered to libfuse at all, so that they
    # never cost a trip through the daemon: folders open and close without it (ls -lR
    # opens one a project; readdir keeps what it needs in its offsets), the kernel takes
    # locks itself, and getting or setting an extended attribute answers ENOSYS once,
    # after which the kernel stops asking (listing them gives none: listxattr).
    opendir = releasedir = fsyncdir = access = lock = bmap = ioctl = None
    getxattr = setxattr = removexattr = None

    def __init__(self, tree: PackageTree, on_ready: Callable[[], None] = lambda: None):
        self.tree = tree
        self._on_ready = on_ready
        self._kernel = KernelCache()
        tree.catalog.on_change(self._kernel.forget_projects)
        self._open: dict[int, Handle] = {}
        # Folders being read: a listing's number -> its entries (a reader that stops
        # halfway leaves its listing to the LRU's bound).
        self._listings: LRUCache = LRUCache(maxsize=256)
        self._listings_made = itertools.count()
        # What each file was at its last open: while it is the same, the kernel
        # keeps its pages from one open to the next.
        self._opened_as: LRUCache = LRUCache(maxsize=100_000)
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    @_answered
    def init_with_config(self, connection, config):
        # Each read of a folder brings its names' attributes, not only its first part
        # (libfuse's adaptive default): ls -l reads a big folder in many parts, then stats
        # every name, and each name whose attributes did not come is a lookup.
        libfuse.turn_off(connection, libfuse.READDIRPLUS_AUTO)
        self._kernel.attach()
        self._on_ready()

    @_answered
    def destroy(self, path):
        self._kernel.close()
        self.tree.close()

    # --- Looking ---------------------------------------------------------

    @_answered
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

    @_answered
    def readlink(self, path):
        return self.tree.node(_split(path)).attributes().link

    @_answered
    def listxattr(self, path):
        return []  # as a filesystem without extended attributes answers

    @_answered
    def readdir(self, path, offset):
        """The folder's names, each with its attributes, from ``offset`` on: the listing's
        number, its entries and where to go on. A read from the start takes them all at
        once; the offsets handed out name that listing and an entry in it, so the reads
        that follow go on with the same names whatever changes meanwhile, with no open and
        close of the folder through the daemon. The read past the end lets it go."""
        if path is None:
            raise FuseOSError(errno.ENOENT)  # the folder went while it was read
        number, start = divmod(offset, _ENTRIES)
        with self._lock:
            entries = self._listings.get(number) if offset else None
        if entries is None:  # from the start, or a listing let go (seekdir after the end)
            entries = [(".", None), ("..", None), *self.tree.entries(_split(path))]
            with self._lock:
                number = next(self._listings_made) % _LISTINGS + 1
                self._listings[number] = entries
        if start >= len(entries):
            with self._lock:
                self._listings.pop(number, None)
        return number, entries, start

    @_answered
    def statfs(self, path):
        """The store's space, or, for S3, large numbers as s3ql and mountpoint-s3 give, so
        that df and free-space checks let copies through."""
        total, free = self.tree.catalog.storage.capacity() or (1 << 50, 1 << 50)
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": total // 4096,
                "f_bfree": free // 4096, "f_bavail": free // 4096, "f_files": 1 << 32,
                "f_ffree": 1 << 32, "f_favail": 1 << 32, "f_namemax": 255}

    # --- Files -----------------------------------------------------------

    # The operations below get libfuse's file info (raw_fi): ``fi.fh`` is our handle.

    @_answered
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

    @_answered
    def create(self, path, mode, fi):
        fi.fh = self._handle(self.tree.create(_split(path), writer=self._caller()))

    @_answered
    def read(self, path, size, offset, fi):
        return self._open[fi.fh].read(offset, size)

    @_answered
    def write(self, path, data, offset, fi):
        return self._open[fi.fh].write(data, offset)

    @_answered
    def truncate(self, path, length, fi=None):
        if fi is not None:
            return self._open[fi.fh].truncate(length)
        self.tree.truncate(_split(path), length)

    @_answered
    def flush(self, path, fi):
        """A close of one of the descriptors of a handle. The writer's own close stores the
        file, whole; the closes of processes that inherited the descriptor (``(cat a; cat b)
        > f``) do not, nor do those of readers."""
        opened = self._open[fi.fh]
        # Only a writer's handle asks who closes it: finding out costs a read of /proc.
        if opened.writer is not None and opened.closed_by(self._caller()):
            # The pages a copy changed are new to whoever reads them next.
            self._kernel.wait_until_told()

    @_answered
    def fsync(self, path, datasync, fi):
        self._open[fi.fh].sync()

    @_answered
    def release(self, path, fi):
        with self._lock:
            opened = self._open.pop(fi.fh)
        opened.release()

    @_answered
    def unlink(self, path):
        self.tree.delete(_split(path))

    @_answered
    def rename(self, old, new, flags=0):
        if flags:  # renameat2's NOREPLACE or EXCHANGE, refused as under libfuse 2: mv then
            # checks the target itself and renames plainly
            raise FuseOSError(errno.EINVAL)
        self.tree.rename(_split(old), _split(new))

    # --- Folders ---------------------------------------------------------

    @_answered
    def mkdir(self, path, mode):
        self.tree.make_project(_split(path))

    @_answered
    def rmdir(self, path):
        self.tree.remove_project(_split(path))

    # --- What a store has no place for succeeds, as copy tools expect ----

    @_answered
    def chmod(self, path, mode):
        self._exists(path)

    @_answered
    def chown(self, path, uid, gid):
        self._exists(path)

    @_answered
    def utimens(self, path, times=None):
        self._exists(path)

    def _exists(self, path: str | None) -> None:
        if path is not None:  # none: a file open (fchmod, futimens), so it is there
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


class Session(fuse.FUSE):
    """mfusepy's mount, with what it leaves out of libfuse 3: readdirplus, rename's flags
    and ftruncate's handle."""

    def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
        """Each name with its attributes, when the kernel asks for them (FUSE_READDIR_PLUS):
        then ls -l, find and nginx need no lookup of each name. libfuse 3.14 hands the
        attributes to the kernel only with entries that have offsets (PackageFS.readdir
        says what they are)."""
        plus = flags & _READDIR_PLUS
        listing, entries, start = self.operations.readdir(
            None if path is None else path.decode(self.encoding, self.errors), offset)
        for number in range(start, len(entries)):
            name, attributes = entries[number]
            entry = fuse.c_stat()
            if attributes is None:  # . and ..
                entry.st_mode = stat.S_IFDIR
            else:
                _fill_stat(entry, attributes)
            fill = _FILL_DIR_PLUS if plus and attributes is not None else 0
            following = listing * _ENTRIES + number + 1  # where the next read goes on
            if filler(buf, name.encode(self.encoding, self.errors), entry, following, fill):
                break  # the kernel's buffer is full
        return 0

    def rename_fuse_3(self, old, new, flags):
        return self.operations.rename(old.decode(self.encoding, self.errors),
                                      new.decode(self.encoding, self.errors), flags)

    def truncate_fuse_3(self, path, length, fip):
        return self.operations.truncate(
            None if path is None else path.decode(self.encoding, self.errors), length,
            fip.contents if fip else None)


_READDIR_PLUS, _FILL_DIR_PLUS = 1, 2  # fuse_readdir_flags, fuse_fill_dir_flags
_ENTRIES = 1 << 32  # a folder's entries at most: a readdir offset is listing * _ENTRIES + entry
_LISTINGS = 1 << 30  # listing numbers, reused in turn: offsets stay under 2**62


def _stat(attributes: Attributes) -> dict:
    mode, links = _mode_and_links(attributes)
    mtime_ns = int(attributes.mtime * 1e9)
    return {"st_mode": mode, "st_nlink": links, "st_size": attributes.size,
            "st_blocks": (attributes.size + 511) // 512, "st_uid": _OWNER[0],
            "st_gid": _OWNER[1], "st_mtime": mtime_ns, "st_ctime": mtime_ns,
            "st_atime": mtime_ns}


def _fill_stat(entry: fuse.c_stat, attributes: Attributes) -> None:
    """What ``_stat`` says, written straight into libfuse's struct: a folder read fills
    one a name, and mfusepy's way from a dict (``set_st_attrs``) cost more than the rest of
    the read."""
    entry.st_mode, entry.st_nlink = _mode_and_links(attributes)
    entry.st_size = attributes.size
    entry.st_blocks = (attributes.size + 511) // 512
    entry.st_uid, entry.st_gid = _OWNER
    seconds, nanoseconds = divmod(int(attributes.mtime * 1e9), 1_000_000_000)
    for time in (entry.st_atimespec, entry.st_mtimespec, entry.st_ctimespec):
        time.tv_sec, time.tv_nsec = seconds, nanoseconds


def _mode_and_links(attributes: Attributes) -> tuple[int, int]:
    if attributes.folder:
        return stat.S_IFDIR | 0o755, 2
    if attributes.link is not None:
        return stat.S_IFLNK | 0o777, 1
    return stat.S_IFREG | (0o644 if attributes.writable else 0o444), 1


_OWNER = (os.getuid(), os.getgid())  # every name is the daemon's user's


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
