"""Scenario 2: an S3 store 20 ms away, pkgfs against s3fs-fuse and rclone mount.

moto serves the bucket on loopback behind a proxy that delays each request
by 20 ms. Each mount lists the same objects (pypicloud's layout: prefix
``packages/``, hash folders); requests are counted by type at the S3 server.

    .venv/bin/python bench/s3.py [--files 10000] [--projects 2000] [--mib 100] [--wheels 200]
                                 [--ls-limit 1800] [--only pkgfs s3fs rclone]

Targets: read throughput at least the best of s3fs and rclone; a cold
``ls -lR`` of at most ceil(files/1000) LIST plus one a key range and no HEAD,
faster than both and than a plain sequential boto3 pagination of the same
bucket through the same proxy (the time any single-stream lister needs just
to read the keys), measured in the same run; a warm ``ls -lR`` with no request
at all. ``--files 100000 --only pkgfs`` is the large store (filled by 32
threads straight into moto: the time it took is printed). pkgfs runs as users get it: the
index on. What the index costs: the first page of a project of 200 wheels
(target under 2 s), then the same page again and after a restart.
"""

import argparse
import math
from concurrent.futures import ThreadPoolExecutor
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _setup
from _setup import table
from chart import bar_chart

import boto3

from harness import BUCKET, CREDENTIALS, Mounts, MotoServer, s3_config
from pkgfs.config import DEFAULT_LIST_CONCURRENCY
from proxy import CuttableProxy
from stores import S3Store, wheel

PREFIX = "packages/"
# moto answers each LIST in time proportional to the whole bucket (about 0.5 s a
# page at 100,000 keys), one request at a time: a listing of 100,000 takes it
# about a minute, past the default pkgfs.list_timeout, and with 16 LISTs in
# flight each waits for the others past the default pkgfs.timeout. Real S3
# nears neither; the bench waits for moto.
SLOW_LISTING = {"pkgfs.list_timeout": 900, "pkgfs.timeout": 120}
LATENCY = 0.020
SMALL = "small_pkg-1.0-py3-none-any.whl"  # 2 MiB, the size of many wheels


def request_kinds(requests: list[tuple[str, str]]) -> dict[str, int]:
    """LIST, HEAD, GET, PUT, POST and DELETE requests, counted."""
    kinds: dict[str, int] = {}
    for method, path in requests:
        bucket_only = re.fullmatch(rf"/{BUCKET}/?(\?.*)?", path) is not None
        kind = "LIST" if method == "GET" and bucket_only else method
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def timed(command: list, limit: float | None = None) -> float:
    """Seconds the command took; infinity if it was stopped at ``limit`` seconds."""
    started = time.perf_counter()
    try:
        subprocess.run([str(part) for part in command], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=limit)
    except subprocess.TimeoutExpired:
        return math.inf
    return time.perf_counter() - started


def fresh_mounts(work: Path, label: str) -> Mounts:
    """pkgfs mounts of one measurement, with a state folder of their own."""
    mounts = Mounts(work / f"{label}-state")
    mounts.tmp_path.mkdir(exist_ok=True)
    return mounts


def proxied(moto: MotoServer, proxy: CuttableProxy, **options) -> str:
    """pkgfs's config of the bucket, reached through the delaying proxy."""
    return s3_config(moto, **{"aws.endpoint_url": proxy.endpoint, **options})


class Contender:
    """One way of mounting the bucket: where its files appear, how it is mounted and unmounted."""

    def __init__(self, name: str, work: Path, proxy: CuttableProxy, moto: MotoServer):
        self.name = name
        self.work = work
        self.proxy = proxy
        self.moto = moto
        self.mountpoint = work / name
        self.mounts = fresh_mounts(work, name)

    def mount(self) -> None:
        if self.name == "pkgfs":
            self.mountpoint = self.mounts.mount(
                proxied(self.moto, self.proxy, **{"pkgfs.cache_ttl": 600, **SLOW_LISTING}),
                name="pkgfs")
            return
        self.mountpoint.mkdir(exist_ok=True)
        if self.name == "s3fs":
            secret = self.work / "s3fs.passwd"
            secret.write_text(f"{CREDENTIALS['AWS_ACCESS_KEY_ID']}:"
                              f"{CREDENTIALS['AWS_SECRET_ACCESS_KEY']}\n")
            secret.chmod(0o600)
            subprocess.run(["s3fs", f"{BUCKET}:/{PREFIX.rstrip('/')}", str(self.mountpoint),
                            "-o", f"url={self.proxy.endpoint},use_path_request_style,"
                                  f"passwd_file={secret},endpoint=us-east-1,"
                                  # its stat cache, as long as pkgfs's listing, and big
                                  # enough for every object
                                  "stat_cache_expire=600,max_stat_cache_size=1000000"],
                           check=True)
        else:
            subprocess.run(["rclone", "mount", f":s3:{BUCKET}/{PREFIX.rstrip('/')}",
                            str(self.mountpoint), "--daemon", "--s3-provider", "Other",
                            "--s3-endpoint", self.proxy.endpoint,
                            "--s3-access-key-id", CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            "--s3-secret-access-key", CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            "--s3-force-path-style=true", "--dir-cache-time", "600s",
                            # modification times from the listing, not a HEAD a file; one
                            # recursive listing where it can
                            "--use-server-modtime", "--fast-list",
                            "--vfs-cache-mode", "off"], check=True,
                           # rclone's S3 client fails on a CA bundle with a plain-HTTP endpoint.
                           env={key: value for key, value in os.environ.items()
                                if key != "AWS_CA_BUNDLE"})
        for _ in range(200):
            if os.path.ismount(self.mountpoint):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not mount")

    def unmount(self) -> None:
        if self.name == "pkgfs":
            self.mounts.close()
        else:
            subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=True)

    def path_of(self, store: S3Store, filename: str) -> Path:
        """Where a stored file appears in this mount."""
        if self.name == "pkgfs":
            project = filename.split("-")[0].replace("_", "-")
            return self.mountpoint / project / filename
        return self.mountpoint / store.key(filename).removeprefix(PREFIX)

    def copy_target(self, store: S3Store, filename: str) -> Path:
        """Where a copy must go to land at its pypicloud key."""
        if self.name == "pkgfs":
            return self.mountpoint
        folder = self.path_of(store, filename).parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def measure(contender: Contender, store: S3Store, big: str, wheels: Path, files: int,
            ls_limit: float) -> dict:
    figures = {}
    mark = len(contender.moto.requests())

    def since() -> dict:
        nonlocal mark
        requests = contender.moto.requests()
        kinds, mark = request_kinds(requests[mark:]), len(requests)
        return kinds

    contender.mount()
    try:
        since()
        figures["ls -lR cold s"] = timed(["ls", "-lR", contender.mountpoint], ls_limit)
        figures["ls -lR cold requests"] = since()
        if math.isinf(figures["ls -lR cold s"]):  # stopped: nothing is warm
            figures["ls -lR warm s"], figures["ls -lR warm requests"] = None, None
        else:
            figures["ls -lR warm s"] = timed(["ls", "-lR", contender.mountpoint], ls_limit)
            figures["ls -lR warm requests"] = since()
        if contender.name == "pkgfs":
            pid = _setup.daemon_pid(contender.mounts)
            figures["RSS MiB"] = _setup.memory_kib(pid, "VmRSS") / 1024
            figures["peak RSS MiB"] = _setup.memory_kib(pid) / 1024
        figures["read MiB/s"] = (os.path.getsize(contender.path_of(store, big)) / 2**20
                                 / timed(["cat", contender.path_of(store, big)]))
        figures["read requests"] = since()
        figures["small read ms"] = timed(["cat", contender.path_of(store, SMALL)]) * 1000
        figures["small read requests"] = since()
        started = time.perf_counter()
        for source in sorted(wheels.iterdir()):
            subprocess.run(["cp", source, contender.copy_target(store, source.name)], check=True)
        figures["cp wheels s"] = time.perf_counter() - started
        figures["cp requests"] = since()
        for source in sorted(wheels.iterdir()):  # each copy landed whole at its key
            assert store.stored(source.name)[0] == source.read_bytes(), (contender.name, source)
            store.client.delete_object(Bucket=BUCKET, Key=store.key(source.name))
    finally:
        contender.unmount()
    figures["listed files"] = files
    return figures


def listing_past_cache_ttl(work: Path, proxy: CuttableProxy, moto: MotoServer,
                           ttl: float = 10.0) -> dict:
    """pkgfs on a mount in use: an ``ls -lR`` just past the first listing's cache_ttl,
    against the cold ``ls -lR`` that made that listing."""
    mounts = fresh_mounts(work, "pkgfs-in-use")
    mountpoint = mounts.mount(proxied(moto, proxy, **{"pkgfs.cache_ttl": ttl}),
                              name="pkgfs-in-use")
    try:
        cold = timed(["ls", "-lR", mountpoint])
        expires = time.monotonic() + ttl
        time.sleep(ttl / 2)
        timed(["ls", "-lR", mountpoint])  # half of cache_ttl: listed again in the background
        time.sleep(max(0.0, expires + 0.5 - time.monotonic()))
        past = timed(["ls", "-lR", mountpoint])
    finally:
        mounts.close()
    return {"cold s": cold, "past cache_ttl s": past}


def index_cost(work: Path, proxy: CuttableProxy, moto: MotoServer, store: S3Store,
               wheels: int = 200) -> dict:
    """The first page of a project of ``wheels`` wheels on a fresh mount and cache, the page
    again, and the page after a restart that keeps the cache."""
    for number in range(wheels):  # 100 KiB wheels; every fourth with METADATA far from the end
        store.add(f"wide-1.{number}-py3-none-any.whl",
                  wheel("wide", f"1.{number}", padding=100 << 10, metadata_first=number % 4 == 0))
    mounts = fresh_mounts(work, "pkgfs-index")
    config = proxied(moto, proxy, **{"pkgfs.cache_ttl": 600})
    figures = {}
    try:
        for run in ("first page", "page again", "after restart"):
            if run != "page again":
                mountpoint = mounts.mount(config, name=run.replace(" ", "-"))
                timed(["ls", mountpoint / "wide"])  # the listing, not the page
            mark = len(moto.requests())
            figures[f"{run} s"] = timed(["cat", mountpoint / "wide" / "index.json"])
            figures[f"{run} requests"] = request_kinds(moto.requests()[mark:])
            if run == "page again":
                mounts.unmount(mountpoint)
    finally:
        mounts.close()
    for number in range(wheels):
        store.client.delete_object(Bucket=BUCKET,
                                   Key=store.key(f"wide-1.{number}-py3-none-any.whl"))
    return figures


def cold_ls(work: Path, proxy: CuttableProxy, moto: MotoServer) -> float:
    """Seconds a plain ``ls`` of a fresh mount's root takes: the listing of the store, and
    one folder read."""
    mounts = fresh_mounts(work, "pkgfs-ls")
    mountpoint = mounts.mount(proxied(moto, proxy, **SLOW_LISTING), name="pkgfs-ls")
    try:
        return timed(["ls", mountpoint])
    finally:
        mounts.close()


def sequential_listing(proxy: CuttableProxy) -> float:
    """Seconds a plain boto3 paginator takes to read every key under the prefix through the
    proxy, one page after another: the baseline of any single-stream lister."""
    client = boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    started = time.perf_counter()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        pass
    return time.perf_counter() - started


def all_keys(client) -> list[str]:
    return [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET) for item in page.get("Contents", [])]


def populate(store: S3Store, files: int, projects: int, mib: int) -> str:
    def add(number: int) -> None:
        project = number % projects
        store.add_raw(store.key(f"proj{project}-1.{number // projects}.tar.gz"), b"x" * 100)

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(add, range(files)))
    big = "big_pkg-1.0-py3-none-any.whl"
    store.add(big, os.urandom(mib << 20))
    store.add(SMALL, os.urandom(2 << 20))
    return big


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=2_000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--wheels", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=["pkgfs", "s3fs", "rclone"])
    parser.add_argument("--ls-limit", type=float, default=1800,
                        help="seconds after which an ls -lR is stopped (s3fs takes hours "
                             "on 10,000 objects)")
    arguments = parser.parse_args()
    _setup.require_root_and_fuse()
    _setup.require_tools(*(tool for tool in arguments.only if tool != "pkgfs"))
    work = Path(tempfile.mkdtemp(prefix="pkgfs-bench-s3-"))
    moto = MotoServer(work / "moto.log")
    moto.start()
    proxy = CuttableProxy(moto.port, latency=LATENCY)
    try:
        client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=BUCKET)
        store = S3Store(client, BUCKET, prefix=PREFIX)
        started = time.perf_counter()
        big = populate(store, arguments.files, arguments.projects, arguments.mib)
        print(f"filled the bucket with {arguments.files + 2} objects in "
              f"{time.perf_counter() - started:.0f} s (32 threads, straight into moto)", flush=True)
        baseline = sequential_listing(proxy)
        root_ls = cold_ls(work, proxy, moto) if "pkgfs" in arguments.only else None
        wheels = work / "wheels"
        wheels.mkdir()
        for number in range(arguments.wheels):
            (wheels / f"new{number}-1.0-py3-none-any.whl").write_bytes(
                wheel(f"new{number}", "1.0", padding=4096))
        original = set(all_keys(client))
        results = {}
        in_use = index = None
        if "pkgfs" in arguments.only and arguments.files <= 20_000:  # as on 10,000 files
            in_use = listing_past_cache_ttl(work, proxy, moto)
            index = index_cost(work, proxy, moto, store)
        for name in arguments.only:
            results[name] = measure(Contender(name, work, proxy, moto), store, big, wheels,
                                    arguments.files + 1, arguments.ls_limit)
            print(f"{name}: {results[name]}", flush=True)  # kept, should a later one fail
            for key in set(all_keys(client)) - original:  # folder markers some mounts make
                client.delete_object(Bucket=BUCKET, Key=key)
    finally:
        proxy.close()
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("measured:", "; ".join(version(name) for name in arguments.only))
    report(results, arguments.files + 1, arguments.ls_limit, baseline)
    if root_ls is not None:
        print(f"pkgfs cold ls of the root (the listing): {root_ls:.2f} s, "
              f"{root_ls / baseline:.2f}x the sequential pagination")
    draw(results, arguments.files + 1, baseline, root_ls)
    if index:
        for run in ("first page", "page again", "after restart"):
            kinds = " ".join(f"{kind}={count}" for kind, count in
                             sorted(index[f"{run} requests"].items())) or "no request"
            print(f"pkgfs index, a project of 200 wheels, {run}: {index[f'{run} s']:.3f} s, "
                  f"{kinds}" + (" (target < 2 s)" if run == "first page" else ""))
    if in_use:
        past, cold = in_use["past cache_ttl s"], in_use["cold s"]
        print(f"pkgfs ls -lR just past cache_ttl on a mount in use: {past:.2f} s, "
              f"{past / cold:.2f}x its cold ls -lR ({cold:.2f} s): listed again in the background")
    return 0


def draw(results: dict, files: int, baseline: float, root_ls: float | None) -> None:
    """The README's chart of this run: bench/results/s3-<files>.svg."""
    rows = [("sequential boto3 pagination", baseline)]
    if root_ls is not None:
        rows.append(("pkgfs cold ls (the listing)", root_ls))
    for name, figures in results.items():
        for run in ("cold", "warm"):
            seconds = figures[f"ls -lR {run} s"]
            if seconds is not None and not math.isinf(seconds):
                rows.append((f"{name} ls -lR {run}", seconds))
    folder = Path(__file__).resolve().parent / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"s3-{files}.svg"
    bar_chart(f"Listing {files:,} objects of S3 20 ms away (moto), seconds", rows, path)
    print(f"chart: {path}")


def version(name: str) -> str:
    """What was measured, as the tool names itself."""
    if name == "pkgfs":
        return "pkgfs (this checkout)"
    command = ["rclone", "version"] if name == "rclone" else ["s3fs", "--version"]
    answered = subprocess.run(command, capture_output=True, text=True)
    return (answered.stdout or answered.stderr).strip().splitlines()[0]


def report(results: dict, files: int, ls_limit: float, baseline: float) -> None:
    def kinds(counts: dict | None) -> str:
        if counts is None:
            return "not run"
        return " ".join(f"{kind}={count}" for kind, count in sorted(counts.items())) or "none"

    def seconds(value: float | None) -> str:
        if value is None:
            return "not run"
        return f"stopped at {ls_limit:.0f}" if math.isinf(value) else f"{value:.2f}"

    rows = []
    for name, figures in results.items():
        rows.append((name, f"{figures['read MiB/s']:.0f}", kinds(figures["read requests"]),
                     f"{figures['small read ms']:.0f}", kinds(figures["small read requests"]),
                     seconds(figures["ls -lR cold s"]), kinds(figures["ls -lR cold requests"]),
                     seconds(figures["ls -lR warm s"]), kinds(figures["ls -lR warm requests"]),
                     f"{figures['cp wheels s']:.2f}", kinds(figures["cp requests"])))
    print(f"S3 20 ms away (moto behind a delaying proxy); {files} objects")
    print(table(rows, ("mount", "read MiB/s", "read requests", "2 MiB read ms", "its requests",
                       "ls -lR cold s", "cold requests",
                       "ls -lR warm s", "warm requests", "cp in s", "cp requests")))
    print(f"sequential boto3 pagination of the same keys: {baseline:.2f} s")
    if "pkgfs" in results:
        ratio = results["pkgfs"]["ls -lR cold s"] / baseline
        print(f"pkgfs cold ls -lR / sequential pagination: {ratio:.2f}x (target < 1)")
        pkgfs = results["pkgfs"]
        print(f"pkgfs daemon RSS after ls -lR: {pkgfs['RSS MiB']:.0f} MiB, peak "
              f"{pkgfs['peak RSS MiB']:.0f} MiB")
        print(f"pkgfs cold ls -lR LIST requests:    {pkgfs['ls -lR cold requests'].get('LIST', 0)}"
              f" (target <= {math.ceil(files / 1000)} + {DEFAULT_LIST_CONCURRENCY} ranges), HEAD: "
              f"{pkgfs['ls -lR cold requests'].get('HEAD', 0)} (target 0)")
        print(f"pkgfs warm ls -lR requests:         {sum(pkgfs['ls -lR warm requests'].values())}"
              " (target 0)")
    if "pkgfs" not in results or len(results) == 1:
        return
    pkgfs = results["pkgfs"]
    others = {name: figures for name, figures in results.items() if name != "pkgfs"}
    best_read = max(figures["read MiB/s"] for figures in others.values())
    fastest_ls = min(figures["ls -lR cold s"] for figures in others.values())
    fastest_cp = min(figures["cp wheels s"] for figures in others.values())
    print(f"pkgfs read / best other:            {pkgfs['read MiB/s'] / best_read:.2f}x "
          "(target >= 1)")
    fastest_small = min(figures["small read ms"] for figures in others.values())
    print(f"pkgfs 2 MiB read time / fastest:    {pkgfs['small read ms'] / fastest_small:.2f}x")
    ls_ratio = pkgfs["ls -lR cold s"] / min(fastest_ls, ls_limit)
    print(f"pkgfs cold ls -lR time / fastest:   {'<' if math.isinf(fastest_ls) else ''}"
          f"{ls_ratio:.4f}x (target < 1)")
    print(f"pkgfs cp in time / fastest:         {pkgfs['cp wheels s'] / fastest_cp:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
