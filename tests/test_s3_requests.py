"""What a mount costs in S3 requests, counted by the moto server itself, with the index on
as users get it."""

import collections
import hashlib
import io
import json
import math
import os
import subprocess
import zipfile

from conftest import s3_config
from proxy import CuttableProxy
from stores import wheel


def heads(requests):
    return [path for method, path in requests if method == "HEAD"]


def object_gets(requests):
    return [path for method, path in requests if method == "GET" and "list-type=2" not in path]


def lists(requests):
    return [path for method, path in requests if method == "GET" and "list-type=2" in path]


def listing_commands(mountpoint, tmp_path) -> dict[str, list]:
    """What users list a mount with; each must cost no request per file."""
    return {
        "ls": ["ls", mountpoint],
        "ls -l": ["ls", "-l", mountpoint / "project-0"],
        "ls -lR": ["ls", "-lR", mountpoint],
        "ls --color": ["ls", "--color=always", "-R", mountpoint],
        "find": ["find", mountpoint, "-ls"],
        "du": ["du", "-s", mountpoint],
        "stat": ["stat", *sorted((mountpoint / "project-1").iterdir())],
        "rsync": ["rsync", "-a", "--dry-run", f"{mountpoint}/", tmp_path / "copy"],
    }


def test_listing_costs_one_list_per_1000_files_and_nothing_per_file(s3_store, moto_server,
                                                                    mounts, tmp_path):
    files = 1001
    for number in range(files):
        name = (f"project_{number % 37}-1.{number}.tar.gz" if number % 2 else
                f"project_{number % 37}-1.{number}-py3-none-any.whl")
        s3_store.add(name, b"x" * (number % 50))
    probe = mounts.mount(s3_config(moto_server, **{"pkgfs.cache_ttl": 3600}), name="probe")
    commands = listing_commands(probe, tmp_path)
    mounts.unmount(probe)

    for name, command in commands.items():
        mountpoint = mounts.mount(s3_config(moto_server, **{"pkgfs.cache_ttl": 3600}),
                                  name=name.replace(" ", "_"))
        command = [str(argument).replace(str(probe), str(mountpoint)) for argument in command]
        before = len(moto_server.requests())
        cold = subprocess.run(command, capture_output=True, text=True)
        assert cold.returncode == 0, (name, cold.stderr)
        cold_requests = moto_server.requests()[before:]
        assert len(lists(cold_requests)) <= math.ceil(files / 1000), name
        assert heads(cold_requests) == [] and object_gets(cold_requests) == [], name
        after_cold = len(moto_server.requests())
        warm = subprocess.run(command, capture_output=True, text=True)
        assert warm.stdout == cold.stdout, name
        assert moto_server.requests()[after_cold:] == [], name
        mounts.unmount(mountpoint)


def test_ls_lR_shows_every_file_with_its_size(s3_store, moto_server, mounts):
    for number in range(1001):
        s3_store.add(f"project_{number % 37}-1.{number}.tar.gz", b"x" * (number % 50))
    mountpoint = mounts.mount(s3_config(moto_server, **{"pkgfs.cache_ttl": 3600}))
    listing = subprocess.run(["ls", "-lR", mountpoint], capture_output=True, text=True, check=True)
    assert listing.stdout.count(".tar.gz") == 1001
    for number in (0, 999, 1000):
        stat = os.stat(mountpoint / f"project-{number % 37}" / f"project_{number % 37}-1.{number}.tar.gz")
        assert stat.st_size == number % 50


def core_metadata_sha256(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        return hashlib.sha256(archive.read(name)).hexdigest()


def test_a_page_costs_a_request_or_two_per_file_once_and_across_restarts(
        s3_store, moto_server, mounts):
    """A wheel's details cost one GET of its end (which answers its stored metadata too), a
    second only where METADATA is far from the zip's directory; an sdist one HEAD."""
    wheels, far = {}, set()  # far: METADATA written first, away from the zip's directory
    for number in range(12):
        name = f"many-1.{number}-py3-none-any.whl"
        wheels[name] = wheel("many", f"1.{number}", padding=200_000 if number < 8 else 0,
                             metadata_first=number < 4)
        s3_store.add(name, wheels[name])
        if number < 4:
            far.add(name)
    s3_store.add("many-0.1.tar.gz", b"an sdist")
    s3_store.add("many-0.2.tar.gz", b"another sdist")
    config = s3_config(moto_server, **{"pkgfs.cache_ttl": 3600})
    mountpoint = mounts.mount(config, name="first")
    os.listdir(mountpoint / "many")

    before = len(moto_server.requests())
    page = json.loads((mountpoint / "many" / "index.json").read_bytes())
    requests = moto_server.requests()[before:]
    gets = collections.Counter(path.rpartition("/")[2] for path in object_gets(requests))
    assert gets == {name: 2 if name in far else 1 for name in wheels}, gets
    assert sorted(path.rpartition("/")[2] for path in heads(requests)) == [
        "many-0.1.tar.gz", "many-0.2.tar.gz"]
    for entry in page["files"]:
        if entry["filename"] in wheels:
            data = wheels[entry["filename"]]
            assert entry["core-metadata"] == {"sha256": core_metadata_sha256(data)}
            assert entry["hashes"] == {"sha256": hashlib.sha256(data).hexdigest()}

    before = len(moto_server.requests())
    (mountpoint / "many" / "index.html").read_bytes()
    for name in wheels:
        (mountpoint / "many" / f"{name}.metadata").read_bytes()
    assert moto_server.requests()[before:] == []
    mounts.unmount(mountpoint)

    again = mounts.mount(config, name="again")  # the same cache_dir: nothing to work out
    before = len(moto_server.requests())
    assert json.loads((again / "many" / "index.json").read_bytes()) == page
    assert [method for method, _ in moto_server.requests()[before:]] == ["GET"]  # the LIST


def test_a_first_page_works_its_files_out_concurrently(s3_store, moto_server, mounts):
    """Through an S3 100 ms away, 32 files are worked out side by side, a bounded number at
    a time, not one request after another."""
    for number in range(32):
        s3_store.add(f"wide-1.{number}.tar.gz", b"sdist")
    proxy = CuttableProxy(moto_server.port, latency=0.1)
    try:
        mountpoint = mounts.mount(s3_config(moto_server, **{"aws.endpoint_url": proxy.endpoint}))
        os.listdir(mountpoint / "wide")
        proxy.peak_in_flight = 0
        page = json.loads((mountpoint / "wide" / "index.json").read_bytes())
        assert len(page["files"]) == 32
        assert 4 <= proxy.peak_in_flight <= 16, proxy.peak_in_flight
    finally:
        proxy.close()


def test_a_sequential_read_costs_a_handful_of_gets(s3_store, moto_server, mounts):
    data = os.urandom(24 * 1024 * 1024)
    s3_store.add("big_pkg-1.0-py3-none-any.whl", data)
    mountpoint = mounts.mount(s3_config(moto_server))
    os.listdir(mountpoint / "big-pkg")
    before = len(moto_server.requests())

    with open(mountpoint / "big-pkg" / "big_pkg-1.0-py3-none-any.whl", "rb") as package:
        assert package.read() == data
    gets = object_gets(moto_server.requests()[before:])
    # A window for the first read, then one GET streams the rest; 128 KiB reads
    # would be 192 GETs.
    assert 1 <= len(gets) <= 2, gets



def test_a_wheel_of_up_to_4_mib_is_read_in_one_get(s3_store, moto_server, mounts):
    data = os.urandom(3 << 20)
    s3_store.add("small_pkg-1.0-py3-none-any.whl", data)
    mountpoint = mounts.mount(s3_config(moto_server))
    os.listdir(mountpoint / "small-pkg")
    before = len(moto_server.requests())

    assert (mountpoint / "small-pkg" / "small_pkg-1.0-py3-none-any.whl").read_bytes() == data
    assert len(object_gets(moto_server.requests()[before:])) == 1
