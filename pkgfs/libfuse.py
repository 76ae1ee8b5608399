"""libfuse 3, through mfusepy (fusepy's API, kept up).

Where libfuse 2 is installed too, mfusepy takes it first; pkgfs asks for 3, whose
readdirplus hands a folder's names over with their attributes, so that ``ls -l`` and
``find`` of a folder are one call to the daemon instead of one per name.
"""

import ctypes
import os
import threading

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy as fuse  # noqa: E402  (loads the library the environment names)

if fuse.fuse_version_major < 3:
    raise ImportError(f"libfuse {fuse.fuse_version_major}.{fuse.fuse_version_minor} was loaded "
                      "(FUSE_LIBRARY_PATH?); pkgfs needs libfuse 3")

__all__ = ["fuse", "READDIRPLUS_AUTO", "keep_thread_state", "turn_off"]

READDIRPLUS_AUTO = 1 << 14  # FUSE_CAP_READDIRPLUS_AUTO


def turn_off(connection: fuse.fuse_conn_info, capability: int) -> None:
    """Take a capability out of what the mount asks of the kernel (in init)."""
    library = fuse._libfuse
    if hasattr(library, "fuse_unset_feature_flag"):  # libfuse 3.17 and later
        library.fuse_unset_feature_flag.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        library.fuse_unset_feature_flag(ctypes.byref(connection), capability)
    else:
        connection.want &= ~capability


_kept = threading.local()


def keep_thread_state() -> None:
    """Keep the calling libfuse worker's Python thread state for the worker's life.

    ctypes makes a thread state for each call from a thread Python did not start, and
    throws it away after (CPython issue 146219): about 10 us a call, and the munmap of its
    frame stack interrupts the daemon's other threads (TLB shootdown). One
    PyGILState_Ensure left outstanding keeps it, as CPython's documentation of foreign
    threads shows. libfuse never ends a worker while the mount runs (mount.py:
    max_idle_threads), so none is kept for nothing."""
    if not getattr(_kept, "state", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _kept.state = True
