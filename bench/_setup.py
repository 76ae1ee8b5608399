"""What every benchmark shares: the tests' harness (moto, mounts, stores), and a results table."""

import os
import shutil
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY / "tests"))


def daemon_pid(mounts) -> int:
    return int(next(mounts.state.glob("pkgfs/*.pid")).read_text())


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a process from /proc: VmHWM is its peak resident set."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} for {pid}")


def table(rows: list[tuple], headers: tuple) -> str:
    columns = zip(headers, *rows, strict=True)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in (headers, *rows)]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def require_root_and_fuse() -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        sys.exit("bench: run as root on a machine with /dev/fuse")


def require_tools(*tools: str) -> None:
    """Stop with one line naming the first tool missing (Debian's package has its name)."""
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing: apt-get install {tool} "
                     "(./dev bench installs every tool the benchmarks use)")
