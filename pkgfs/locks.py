"""Locks on files (flock) that tell a live daemon from a dead one: the kernel lets go of a
lock when its holder dies, however it died."""

import fcntl
import os


def hold(path: str, *, wait: bool) -> int:
    """An exclusive lock on ``path`` (made if missing), held while the returned descriptor is
    open. BlockingIOError if someone holds it and ``wait`` is false."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_held(path: str) -> bool:
    """Does a live process hold the lock on ``path``? FileNotFoundError if there is none."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
