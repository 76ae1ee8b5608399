"""Load: 16 readers and 4 writers on one S3-backed mount for a bounded time.

Every byte read back is checked against its sha256, every file written is
checked in the bucket afterwards, and the daemon's peak memory is reported.

    .venv/bin/python bench/load.py [--seconds 20] [--readers 16] [--writers 4] [--json]
"""

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _setup
from _setup import daemon_pid, memory_kib, table

import boto3

from harness import BUCKET, CREDENTIALS, Mounts, MotoServer, s3_config
from stores import S3Store, wheel


class Load:
    def __init__(self, mountpoint: Path, known: dict[str, tuple[str, str]], deadline: float):
        self.mountpoint = mountpoint
        self.known = known  # filename -> (project, sha256), grows as writers finish
        self.deadline = deadline
        self.lock = threading.Lock()
        self.reads = self.bytes_read = self.writes = 0
        self.errors: list[str] = []
        self.written: dict[str, str] = {}

    def reader(self, seed: int) -> None:
        chooser = random.Random(seed)
        while time.monotonic() < self.deadline:
            with self.lock:
                filename, (project, sha256) = chooser.choice(sorted(self.known.items()))
            try:
                data = (self.mountpoint / project / filename).read_bytes()
            except OSError as error:
                self.fail(f"read {filename}: {error}")
                continue
            if hashlib.sha256(data).hexdigest() != sha256:
                self.fail(f"read {filename}: wrong bytes")
            with self.lock:
                self.reads += 1
                self.bytes_read += len(data)

    def writer(self, number: int) -> None:
        chooser = random.Random(1000 + number)
        sequence = 0
        while time.monotonic() < self.deadline:
            sequence += 1
            project = f"load-w{number}-{sequence}"
            filename = f"load_w{number}_{sequence}-1.0-py3-none-any.whl"
            data = wheel(project, "1.0", padding=chooser.randrange(64 << 10, 1 << 20))
            try:
                with open(self.mountpoint / filename, "wb") as package:
                    package.write(data)
            except OSError as error:
                self.fail(f"write {filename}: {error}")
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            with self.lock:
                self.writes += 1
                self.written[filename] = sha256
                self.known[filename] = (project, sha256)

    def fail(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def run(seconds: float, readers: int, writers: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="pkgfs-load-"))
    moto = MotoServer(work / "moto.log")
    moto.start()
    mounts = Mounts(work)
    try:
        client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=BUCKET)
        store = S3Store(client, BUCKET, prefix="packages/")
        known = {}
        for number in range(32):
            data = wheel(f"seed-{number}", "1.0", padding=(number + 1) * (128 << 10))
            filename = f"seed_{number}-1.0-py3-none-any.whl"
            store.add(filename, data)
            known[filename] = (f"seed-{number}", hashlib.sha256(data).hexdigest())
        mountpoint = mounts.mount(s3_config(moto, **{"pkgfs.cache_ttl": 5}))
        pid = daemon_pid(mounts)
        load = Load(mountpoint, known, time.monotonic() + seconds)
        threads = [threading.Thread(target=load.reader, args=(seed,)) for seed in range(readers)]
        threads += [threading.Thread(target=load.writer, args=(number,))
                    for number in range(writers)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        peak_kib = memory_kib(pid)
        lost = [filename for filename, sha256 in load.written.items()
                if (stored := store.stored(filename)) is None
                or hashlib.sha256(stored[0]).hexdigest() != sha256]
        mounts.close()
        return {"seconds": round(elapsed, 1), "readers": readers, "writers": writers,
                "reads": load.reads, "read_mib": round(load.bytes_read / 2**20, 1),
                "writes": load.writes, "errors": load.errors, "lost_or_wrong_in_store": lost,
                "daemon_peak_rss_mib": round(peak_kib / 1024, 1)}
    finally:
        for mountpoint in list(mounts.mounted):  # only after a failure above
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)])
        moto.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    arguments = parser.parse_args()
    _setup.require_root_and_fuse()
    result = run(arguments.seconds, arguments.readers, arguments.writers)
    if arguments.json:
        print(json.dumps(result))
    else:
        print(table([(key, value if not isinstance(value, list) else len(value))
                     for key, value in result.items()], ("figure", "value")))
        for error in result["errors"][:20]:
            print("error:", error)
    return 1 if result["errors"] or result["lost_or_wrong_in_store"] else 0


if __name__ == "__main__":
    sys.exit(main())
