"""Scenario 1: a sequential read of a 256 MB file, file backend.

pkgfs against reading the backing file directly and against bindfs (a C FUSE
passthrough), each on its first read (nothing cached) and a repeated read.
Targets: first read at least 0.5x bindfs; repeated read at least 0.9x direct.

bindfs is also mounted with -o kernel_cache, so the kernel keeps its pages as
it keeps pkgfs's: that shows what a repeated read through any FUSE
filesystem's page cache reaches on this kernel.

    .venv/bin/python bench/read_file.py [--mib 256] [--rounds 3] [--repeats 9]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _setup
from _setup import table

from harness import Mounts, file_config
from stores import FileStore

CHUNK = 1 << 20


def read_seconds(path: Path) -> float:
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, CHUNK):
            pass
    finally:
        os.close(fd)
    return time.perf_counter() - started


def evict(path: Path) -> None:
    """Drop a file's pages from the kernel's cache, so the next read goes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bindfs_mount(source: str, mountpoint: Path, *options: str) -> None:
    mountpoint.mkdir()
    subprocess.run(["bindfs", *options, source, str(mountpoint)], check=True)


def unmount(mountpoint: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)


def one_round(work: Path, store: FileStore, backing: Path, number: int, repeats: int) -> dict:
    """On new mounts, first reads (each after the file's pages are dropped, the backing
    file's and the mount's), then repeated reads; readers take turns, so that the
    machine's noise falls on all of them alike."""
    relative = os.path.relpath(backing, store.directory)
    bindfs_point = work / f"bindfs-{number}"
    bindfs_mount(store.directory, bindfs_point)
    kept_point = work / f"bindfs-kernel-cache-{number}"
    bindfs_mount(store.directory, kept_point, "-o", "kernel_cache")
    mounts = Mounts(work / f"pkgfs-{number}")
    mounts.tmp_path.mkdir()
    pkgfs_point = mounts.mount(file_config(store))
    paths = {"direct": backing, "bindfs": bindfs_point / relative,
             "bindfs kernel_cache": kept_point / relative,
             "pkgfs": pkgfs_point / "big-pkg" / backing.name}
    try:
        first = {reader: [] for reader in paths}
        for _ in range(repeats):
            for reader, path in paths.items():
                evict(backing)
                evict(path)  # and the mount's own copy of its pages
                first[reader].append(read_seconds(path))
        repeated = {reader: [] for reader in paths}
        for _ in range(repeats):
            for reader, path in paths.items():
                repeated[reader].append(read_seconds(path))
    finally:
        unmount(bindfs_point)
        unmount(kept_point)
        mounts.close()
    return {reader: (statistics.median(first[reader]), statistics.median(repeated[reader]))
            for reader in paths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9,
                        help="first reads and repeated reads a round, each")
    arguments = parser.parse_args()
    _setup.require_root_and_fuse()
    _setup.require_tools("bindfs")
    work = Path(tempfile.mkdtemp(prefix="pkgfs-bench-read-", dir="/var/tmp"))
    store = FileStore(work / "store")
    filename = "big_pkg-1.0.tar.gz"
    with open(work / "data", "wb") as data:
        for _ in range(arguments.mib):
            data.write(os.urandom(CHUNK))
    backing = Path(store.add(filename, b""))
    os.replace(work / "data", backing)
    rounds = [one_round(work, store, backing, number, arguments.repeats)
              for number in range(arguments.rounds)]
    size_mib = arguments.mib
    rows, median = [], {}
    for reader in ("direct", "bindfs", "bindfs kernel_cache", "pkgfs"):
        first = statistics.median(round_[reader][0] for round_ in rounds)
        repeated = statistics.median(round_[reader][1] for round_ in rounds)
        median[reader] = (first, repeated)
        rows.append((reader, f"{size_mib / first:.0f}", f"{size_mib / repeated:.0f}"))
    print(f"sequential read of a {size_mib} MiB file, median of {arguments.rounds} rounds (MiB/s)")
    print(table(rows, ("reader", "first read", "repeated read")))
    first_ratio = median["bindfs"][0] / median["pkgfs"][0]
    repeated_ratio = median["direct"][1] / median["pkgfs"][1]
    print(f"pkgfs first read    / bindfs first read:    {first_ratio:.2f}x (target >= 0.5)")
    print(f"pkgfs repeated read / direct repeated read: {repeated_ratio:.2f}x (target >= 0.9)")
    kept_ratio = median["bindfs kernel_cache"][1] / median["pkgfs"][1]
    print(f"pkgfs repeated read / bindfs -o kernel_cache repeated read: {kept_ratio:.2f}x")
    shutil.rmtree(work)
    return 0 if first_ratio >= 0.5 and repeated_ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
