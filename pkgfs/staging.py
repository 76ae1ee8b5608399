"""Local disk for files being copied in: each mount's own folder, locked while it lives."""

import errno
import logging
import os
import secrets
import shutil
import tempfile
import time

from . import locks
from .errors import ChangeInPlace

log = logging.getLogger(__name__)

# A folder without a lock older than this was left by a pkgfs before locks.
_UNLOCKED_GRACE = 60.0


class StagedFile:
    """A file being written: on local disk until it is stored whole."""

    def __init__(self, project: str, name: str, path: str):
        self.project = project  # the folder it was created in: a project, or ROOT
        self.name = name
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.opens = 0
        self.writing = True  # its creator's handle is open
        self.dirty = False
        self.published = False  # stored: further writes would change it in place
        self.broken = False  # a write failed (disk full): what is staged is not the file
        self.mtime = time.time()

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def write(self, data: bytes, offset: int) -> int:
        if self.published:
            raise ChangeInPlace(f"{self.name} was stored when its writer closed it: "
                                "copy it again whole")
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


class StagingArea:
    """A mount's folder under ``staging_dir``, locked (flock) for as long as the daemon lives:
    a folder nobody holds the lock of was left by a daemon that died, and is removed."""

    LOCK = ".lock"

    def __init__(self, staging_dir: str):
        os.makedirs(staging_dir, mode=0o700, exist_ok=True)
        _remove_dead(staging_dir)
        self.path = tempfile.mkdtemp(prefix=f"mount-{os.getpid()}-", dir=staging_dir)
        self._lock_fd = locks.hold(os.path.join(self.path, self.LOCK), wait=True)

    def new_file(self, project: str, name: str) -> StagedFile:
        return StagedFile(project, name, os.path.join(self.path, secrets.token_hex(8)))

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)


def _remove_dead(staging_dir: str) -> None:
    """Drop what the staging folders of dead daemons hold: their copies failed anyway."""
    for entry in os.scandir(staging_dir):
        if entry.name.startswith("mount-") and entry.is_dir(follow_symlinks=False) \
                and not _is_alive(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
            log.info("removed %s, left by a pkgfs daemon that died", entry.path)


def _is_alive(folder: str) -> bool:
    try:
        return locks.is_held(os.path.join(folder, StagingArea.LOCK))
    except FileNotFoundError:  # being made this instant, or left by a pkgfs before locks
        return time.time() - os.stat(folder).st_mtime < _UNLOCKED_GRACE
