"""Mount and unmount: the mount point's checks, the FUSE session, the daemon."""

import errno
import hashlib
import logging
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .catalog import Catalog
from . import locks
from .config import Config, FileStoreConfig
from .errors import MountError
from .heap import few_malloc_arenas
from .storage.file import FileStorage
from .storage.s3 import S3Storage
from .status import Figures, StatusFile, daemon_memory_mib, is_alive
from .storage import Storage
from .index import Presigning, SimpleIndex, open_index
from .tree import PackageTree

log = logging.getLogger(__name__)

READY = b"ready\n"


@dataclass(frozen=True)
class MountOptions:
    mountpoint: str
    read_only: bool = False
    allow_other: bool = False
    debug: bool = False
    fuse_options: tuple[str, ...] = ()


def state_dir() -> str:
    """Where each mount's pid and log files live."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state_home, "pkgfs")


def state_file(mountpoint: str, suffix: str) -> str:
    """A mount point's file in the state folder: its last folder's name, for people, and a
    hash of its whole path, so that no two mount points (/X/pkgs/a, /X/pkgs_a) share one."""
    path = os.path.abspath(mountpoint)
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    return os.path.join(state_dir(), f"{os.path.basename(path) or 'root'}-{digest}.{suffix}")


class MountLock:
    """Held by the daemon of a mount point from before its checks until it exits: two
    mounts of one mount point at once cannot both pass them, and whoever waits for a daemon
    to exit waits for its lock."""

    def __init__(self, mountpoint: str):
        try:
            self._fd = locks.hold(state_file(mountpoint, "lock"), wait=False)
        except BlockingIOError:
            if os.path.ismount(mountpoint):
                raise MountError(f"{mountpoint} is already mounted: run 'pkgfs umount "
                                 f"{mountpoint}' first") from None
            raise MountError(f"another pkgfs daemon is mounting {mountpoint} this moment: see "
                             f"'pkgfs status {mountpoint}'") from None

    def release(self) -> None:
        os.close(self._fd)


def is_served(mountpoint: str) -> bool:
    """Does a live daemon hold the mount point's lock?"""
    try:
        return locks.is_held(state_file(mountpoint, "lock"))
    except FileNotFoundError:
        return False


def notify_systemd(message: str) -> None:
    """Tell systemd how the service is (a Type=notify unit): one datagram on the unix socket
    $NOTIFY_SOCKET names (``@`` for the abstract namespace). Nothing without it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as notify:
        notify.connect(address)
        notify.sendall(message.encode())


def open_storage(config: Config, figures: Figures | None = None) -> Storage:
    store = config.store
    if isinstance(store, FileStoreConfig):
        return FileStorage(store.directory)
    return S3Storage(
        store.bucket, prefix=store.prefix, prepend_hash=store.prepend_hash, region=store.region,
        endpoint_url=store.endpoint_url, access_key=store.access_key,
        secret_key=store.secret_key, timeout=config.timeout,
        list_concurrency=config.list_concurrency, read_ahead_mib=config.read_ahead_mib,
        figures=figures)


# What a FUSE mount whose daemon died answers.
_STALE_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)


def is_stale(mountpoint: str) -> bool:
    try:
        os.statvfs(mountpoint)  # the kernel caches stat(), but asks the daemon for statfs()
    except OSError as error:
        return error.errno in _STALE_ERRNOS
    return False


def check_mountpoint(mountpoint: str) -> None:
    """Refuse a mount point that cannot be used; clear one a dead daemon left behind."""
    if is_stale(mountpoint):
        log.warning("%s: clearing a stale mount left by a pkgfs daemon that died", mountpoint)
        unmount(mountpoint, lazy=True, wait=False)
    try:
        os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mount point {mountpoint} does not exist: create it with mkdir") from None
    except OSError as error:
        raise MountError(f"mount point {mountpoint}: {error.strerror}") from None
    if not os.path.isdir(mountpoint):
        raise MountError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already mounted: run 'pkgfs umount {mountpoint}' first")


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is not available: /dev/fuse is missing; load it with 'modprobe fuse'"
                         " (in a container, pass --device /dev/fuse)")
    try:
        from . import libfuse  # noqa: F401  (loads libfuse when imported)
    except (OSError, ImportError) as error:
        raise MountError(f"libfuse 3 cannot be loaded ({error}): install it with 'apt-get "
                         "install fuse3'") from None


def fuse_arguments(options: MountOptions, config: Config) -> dict:
    """The libfuse options of a mount."""
    # Files are immutable once stored, so the kernel may keep their pages
    # (PackageFS.open says when) and attributes, as long as the listing is trusted.
    arguments = {
        "fsname": "pkgfs", "subtype": "pkgfs", "default_permissions": True,
        # A file that allow_overwrite lets another mount replace keeps no size in the
        # kernel: before reading past the size it knows, it asks the daemon, which gives
        # the size of the version open (PackageFS.getattr), so a read is never cut.
        "attr_timeout": 0 if config.allow_overwrite else config.cache_ttl,
        "entry_timeout": config.cache_ttl, "negative_timeout": 0,
        "ro": options.read_only, "allow_other": options.allow_other, "debug": options.debug,
        # rm of a file someone holds open removes it (readers keep what they opened, or
        # get EIO), instead of libfuse renaming it to .fuse_hidden*.
        "hard_remove": True,
        # Requests served at once: libfuse 3 serves 10 by default, and a request waiting
        # for a listing (or for S3) holds its thread, while libfuse 2 set no bound. Idle
        # threads are all kept: each keeps its Python thread state (libfuse.py), which a
        # thread that ended would leave behind.
        "max_threads": 64, "max_idle_threads": 64,
        # libfuse 3 needs no more: writes come up to 1 MiB at a time, and opens with
        # O_TRUNC as such (atomic_o_trunc: a stored file is replaced only by an open
        # that truncates it), by default.
    }
    for option in options.fuse_options:
        key, has_value, value = option.partition("=")
        arguments[key] = value if has_value else True
    return arguments


def serve(config: Config, options: MountOptions, ready_fd: int | None = None) -> None:
    """Mount and serve until unmounted; tells ``ready_fd`` (and systemd) once the mount
    works."""
    check_fuse()
    _make_state_dir()
    lock = MountLock(options.mountpoint)
    try:
        _serve(config, options, ready_fd)
    finally:
        lock.release()


def _serve(config: Config, options: MountOptions, ready_fd: int | None) -> None:
    check_mountpoint(options.mountpoint)
    few_malloc_arenas()
    figures = Figures()
    storage = open_storage(config, figures)
    storage.check()
    from .fs import PackageFS, Session  # only after check_fuse() could say what is missing

    catalog = Catalog(storage, config.cache_ttl, wait_limit=config.list_timeout)
    tree = PackageTree(catalog, config.staging_dir, read_only=options.read_only,
                       allow_overwrite=config.allow_overwrite, index=_index(config, catalog),
                       figures=figures)
    pid_path = state_file(options.mountpoint, "pid")
    status = StatusFile(state_file(options.mountpoint, "status"),
                        lambda: _status(config, options, catalog, figures))

    mounted = threading.Event()

    def on_ready() -> None:
        mounted.set()
        log.info("mounted %s on %s", describe(config), options.mountpoint)
        with open(pid_path, "w") as pid_file:
            pid_file.write(f"{os.getpid()}\n")
        status.start()
        notify_systemd(f"READY=1\nSTATUS=serving {describe(config)} on {options.mountpoint}")
        if ready_fd is not None:
            _detach_from_terminal(options.mountpoint)
            os.write(ready_fd, READY)
            os.close(ready_fd)

    filesystem = PackageFS(tree, on_ready)
    try:
        Session(filesystem, options.mountpoint, raw_fi=True, foreground=True, nothreads=False,
                **fuse_arguments(options, config))
    except RuntimeError as error:
        if not mounted.is_set():
            raise MountError(f"mounting {options.mountpoint} failed (libfuse error {error}): "
                             "see the messages above") from None
        # libfuse 3 ends a session stopped by a signal (systemd's SIGTERM, ^C) with an
        # error, once it has unmounted.
        log.info("stopped (libfuse %s: a signal, such as systemd's stop or ^C)", error)
    finally:
        status.stop()
        _remove_if_ours(pid_path)
    notify_systemd("STOPPING=1")
    log.info("unmounted %s", options.mountpoint)


def _status(config: Config, options: MountOptions, catalog: Catalog, figures: Figures) -> dict:
    files, projects = catalog.counts()
    return {"mountpoint": options.mountpoint, "store": describe(config), "state": "mounted",
            "pid": os.getpid(), "memory MiB": daemon_memory_mib(),
            "listing age s": catalog.listing_age(), "files": files, "projects": projects,
            **figures.snapshot()}


def _make_state_dir() -> None:
    try:
        os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    except OSError as error:
        raise MountError(f"cannot make the state folder {state_dir()}: {error.strerror}; set "
                         "XDG_STATE_HOME to a writable folder") from None


def _remove_if_ours(pid_path: str) -> None:
    """A daemon removes its pid file, and no other's (a lazily unmounted old daemon exits
    after a new one wrote its own)."""
    try:
        with open(pid_path) as pid_file:
            if int(pid_file.read()) == os.getpid():
                os.unlink(pid_path)
    except (OSError, ValueError):
        pass


def _index(config: Config, catalog: Catalog) -> SimpleIndex | None:
    if not config.index:
        return None
    presigning = None
    if config.presigned_urls:
        presigning = Presigning(config.store.expire_after, config.store.buffer_time)
    try:
        return open_index(catalog, config.index_cache_dir, presigning)
    except (OSError, sqlite3.Error) as error:
        raise MountError(f"pkgfs.cache_dir {config.cache_dir} cannot hold the index cache "
                         f"({error}): make it a writable directory or set another") from None


def describe(config: Config) -> str:
    store = config.store
    if isinstance(store, FileStoreConfig):
        return f"file store {store.directory}"
    return f"s3 bucket {store.bucket} prefix {store.prefix!r} at {store.endpoint_url or 'AWS'}"


def _detach_from_terminal(mountpoint: str) -> None:
    """From now on the daemon logs to its log file, not the terminal that started it."""
    log_fd = os.open(state_file(mountpoint, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, sys.stdout.fileno())
    os.dup2(log_fd, sys.stderr.fileno())
    os.close(log_fd)


def start_daemon(argv: list[str], mountpoint: str, timeout: float = 120.0) -> int:
    """Run ``pkgfs mount --foreground`` in the background; return once it is mounted.

    The daemon prints its own errors on this terminal until it is ready, then
    moves its output to its log file.
    """
    read_fd, write_fd = os.pipe()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pkgfs", *argv, "--foreground", f"--ready-fd={write_fd}"],
        stdin=subprocess.DEVNULL, pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        answered, _, _ = select.select([ready], [], [], timeout)
        if answered and ready.readline() == READY:
            return 0
    if not answered:
        daemon.terminate()
        raise MountError(f"the daemon did not mount {mountpoint} within {timeout:g}s: "
                         f"see {state_file(mountpoint, 'log')}")
    # The pipe closed without a word: the daemon is exiting, its error already printed.
    return daemon.wait() or 1


def unmount(mountpoint: str, *, lazy: bool = False, wait: bool = True) -> None:
    """Unmount, and wait for the daemon that served the mount to exit."""
    if not (os.path.ismount(mountpoint) or is_stale(mountpoint)):
        raise MountError(f"{mountpoint} is not mounted")
    command = _unmount_command(mountpoint, lazy)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        if "busy" in reason.lower():
            raise MountError(f"{mountpoint} is busy: close the files and shells using it "
                             f"(see 'fuser -m {mountpoint}'), then unmount again")
        raise MountError(f"unmounting {mountpoint} failed: {reason}")
    if wait:
        _wait_for_daemon(mountpoint)


def _unmount_command(mountpoint: str, lazy: bool) -> list[str]:
    for fusermount in ("fusermount3", "fusermount"):
        if shutil.which(fusermount):
            return [fusermount, "-u", *(["-z"] if lazy else []), mountpoint]
    return ["umount", *(["-l"] if lazy else []), mountpoint]


def _wait_for_daemon(mountpoint: str, timeout: float = 10.0) -> None:
    """Wait until the daemon lets go of the mount point's lock; stop it if it does not."""
    deadline = time.monotonic() + timeout
    while is_served(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_served(mountpoint):
        try:
            with open(state_file(mountpoint, "pid")) as pid_file:
                os.kill(int(pid_file.read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass  # gone meanwhile
    else:
        _remove_leftovers(mountpoint)


def _remove_leftovers(mountpoint: str) -> None:
    """The pid and status files a killed daemon left (it writes its status file only while
    its pid file is there)."""
    pid_path = state_file(mountpoint, "pid")
    try:
        with open(pid_path) as pid_file:
            pid = int(pid_file.read())
    except (OSError, ValueError):
        return
    if not is_alive(pid):
        for path in (pid_path, state_file(mountpoint, "status")):
            Path(path).unlink(missing_ok=True)
