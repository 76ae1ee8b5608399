"""What a mount costs in S3 requests, counted by the moto server itself."""

import math
import os
import subprocess

from conftest import s3_config


def object_gets(requests):
    return [path for method, path in requests if method == "GET" and "list-type=2" not in path]


def lists(requests):
    return [path for method, path in requests if method == "GET" and "list-type=2" in path]


def test_ls_lR_lists_in_pages_and_never_heads_or_gets(s3_store, moto_server, mounts):
    files = 1001
    for number in range(files):
        s3_store.add(f"project_{number % 37}-1.{number}.tar.gz", b"x" * (number % 50))
    mountpoint = mounts.mount(s3_config(moto_server, **{"pkgfs.cache_ttl": 3600}))
    before = len(moto_server.requests())

    cold = subprocess.run(["ls", "-lR", mountpoint], capture_output=True, text=True, check=True)
    cold_requests = moto_server.requests()[before:]
    assert cold.stdout.count(".tar.gz") == files
    assert len(lists(cold_requests)) == math.ceil(files / 1000)
    assert [method for method, _ in cold_requests if method != "GET"] == []
    assert object_gets(cold_requests) == []
    for number in (0, 999, 1000):
        stat = os.stat(mountpoint / f"project-{number % 37}" / f"project_{number % 37}-1.{number}.tar.gz")
        assert stat.st_size == number % 50

    after_cold = len(moto_server.requests())
    warm = subprocess.run(["ls", "-lR", mountpoint], capture_output=True, text=True, check=True)
    assert warm.stdout == cold.stdout
    assert moto_server.requests()[after_cold:] == []


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
