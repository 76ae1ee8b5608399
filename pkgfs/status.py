"""What a mount is doing, for ``pkgfs status``: each daemon keeps a small JSON file of its
figures up to date in the state folder, and the command reads them."""

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

# How often a daemon writes its figures.
INTERVAL = 2.0


@dataclass
class Figures:
    """What a daemon counts while it serves a mount. Called from many threads."""

    requests: Counter = field(default_factory=Counter)  # store requests by kind
    failed_requests: int = 0
    last_error: str = ""
    copies_stored: int = 0
    copies_refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1

    def failed(self, error: str) -> None:
        with self._lock:
            self.failed_requests += 1
            self.last_error = error

    def stored(self) -> None:
        with self._lock:
            self.copies_stored += 1

    def refused(self) -> None:
        with self._lock:
            self.copies_refused += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": dict(self.requests), "failed requests": self.failed_requests,
                    "last error": self.last_error, "copies stored": self.copies_stored,
                    "copies refused": self.copies_refused}


class StatusFile:
    """Writes a daemon's figures to ``path`` every INTERVAL seconds, atomically, until
    stopped; removes it then."""

    def __init__(self, path: str, describe):
        self.path = path
        self._describe = describe  # () -> dict of the figures of the moment
        self._stopped = threading.Event()

    def start(self) -> None:
        self.write()
        threading.Thread(target=self._run, name="status", daemon=True).start()

    def write(self) -> None:
        temporary = f"{self.path}.{os.getpid()}"
        with open(temporary, "w") as status:
            json.dump({**self._describe(), "written": time.time()}, status)
        os.replace(temporary, self.path)

    def stop(self) -> None:
        self._stopped.set()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _run(self) -> None:
        while not self._stopped.wait(INTERVAL):
            try:
                self.write()
            except OSError:
                pass  # the state folder went away: the next round tries again


def daemon_memory_mib() -> float:
    """This process's resident memory."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def read_status(path: str) -> dict | None:
    try:
        with open(path) as status:
            return json.load(status)
    except (OSError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    """Does the process run? A killed one stays a zombie until it is reaped: not alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as process_stat:
            return process_stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def lines(status: dict) -> list[str]:
    """One line per fact, as ``pkgfs status`` prints them."""
    requests = " ".join(f"{kind}={count}" for kind, count in sorted(status["requests"].items()))
    age = status.get("listing age s")
    found = [
        f"mount: {status['mountpoint']}",
        f"store: {status['store']}",
        f"state: {status['state']}",
        f"daemon: pid {status['pid']}, {status['memory MiB']:.0f} MiB resident",
        f"listing: {'none yet' if age is None else f'{age:.0f} s old'}, "
        f"{status['files']} files in {status['projects']} projects",
        f"store requests since start: {requests or 'none'}",
        f"failed requests: {status['failed requests']}"
        + (f", last: {status['last error']}" if status["last error"] else ""),
        f"copies: {status['copies stored']} stored, {status['copies refused']} refused",
    ]
    return found
