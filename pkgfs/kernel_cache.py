"""What the kernel keeps of the mount, kept true: the FUSE side of pages that change."""

import ctypes
import queue
import threading
from typing import Callable

from cachetools import LRUCache

from .libfuse import fuse


class KernelCache:
    """Tells the kernel to forget the names of folders whose files changed, and the root's
    page links, so that nothing it keeps outlives a change made through this mount.

    The kernel keeps names and attributes for ``cache_ttl``, which suits stored
    files: they never change in place, and neither does a page's version (a
    page's name is a link, read anew at each lookup). The low-level entry
    notification is sent on the mount's session for names in the root, whose node id (1) is
    the one a high-level filesystem knows; forgetting a folder forgets what is
    in it. Sent by a thread of its own: the kernel applies it under the root's
    lock, which a request that changed a project (a rename in the root) may hold.
    """

    ROOT_ID = 1
    ROOT_PAGES = ("index.html", "index.json")

    def __init__(self):
        self._names: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._told = threading.Condition()
        self._aliases: LRUCache = LRUCache(maxsize=1000)  # folder name -> its project
        self._notify: Callable[[str], None] | None = None

    def attach(self) -> None:
        """Find this mount's session; called in a FUSE request (init), where libfuse has it."""
        libfuse = fuse._libfuse
        libfuse.fuse_get_session.restype = ctypes.c_void_p
        libfuse.fuse_get_session.argtypes = [ctypes.c_void_p]
        notify = libfuse.fuse_lowlevel_notify_inval_entry
        notify.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
        session = libfuse.fuse_get_session(libfuse.fuse_get_context().contents.fuse)
        self._notify = lambda name: notify(session, self.ROOT_ID, name.encode(), len(name.encode()))
        threading.Thread(target=self._run, name="kernel-cache", daemon=True).start()

    def seen_folder(self, name: str, project: str) -> None:
        """A folder was looked up as ``name``: when ``project`` changes, forget that too."""
        if name != project:
            with self._told:
                self._aliases[name] = project

    def forget_projects(self, projects: set[str]) -> None:
        with self._told:
            aliases = [name for name, project in self._aliases.items() if project in projects]
        for name in (*self.ROOT_PAGES, *projects, *aliases):
            self._send(name)

    def wait_until_told(self, timeout: float = 1.0) -> None:
        """Wait until the kernel has been told what changed so far (bounded: never hangs)."""
        with self._told:
            self._told.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self._names.put(None)

    def _send(self, name: str) -> None:
        if self._notify is None:
            return  # not mounted yet: the kernel has nothing to forget
        with self._told:
            self._pending += 1
        self._names.put(name)

    def _run(self) -> None:
        while (name := self._names.get()) is not None:
            self._notify(name)  # -ENOENT: the kernel had not kept the name
            with self._told:
                self._pending -= 1
                self._told.notify_all()
