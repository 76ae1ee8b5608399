"""Faults never lose a package or hang a mount: S3 down or hanging, a killed daemon, a full disk."""

import errno
import os
import shutil
import signal
import subprocess
import time

import pytest

from harness import staged_files
from pkgfs.catalog import RETRY_AFTER
from conftest import file_config, pkgfs, s3_config, skip_unless_root
from proxy import CuttableProxy
from stores import wheel

WHEEL = "my_pkg-1.0-py3-none-any.whl"
# A guard against a hung mount, far above what pkgfs.timeout = 1 allows: never a measurement.
HANG = 120
# What pkgfs.timeout = 1 lets a call take, with room for a loaded machine: a caller
# that waited for another's attempts, or for a dripped answer, would take longer.
BOUND = 8
# Endpoints that fail: refusing connections, holding them and saying nothing,
# dripping their answers a byte at a time, answering 503 SlowDown to everything.
FAILURES = ["down", "hanging", "dripping", "throttled"]


@pytest.fixture
def proxy(moto_server):
    proxy = CuttableProxy(moto_server.port)
    yield proxy
    proxy.close()


def break_endpoint(proxy, how: str) -> None:
    if how == "down":
        proxy.cut()
    elif how == "hanging":
        proxy.stall()
    elif how == "dripping":
        proxy.drip = 0.2  # within every socket read timeout: only a deadline ends it
    else:
        proxy.refusing = True


def mount_via(proxy, moto_server, mounts, **options):
    return mounts.mount(s3_config(moto_server, **{
        "aws.endpoint_url": proxy.endpoint, "pkgfs.timeout": 1, **options}))


def run(*command):
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=HANG)


@pytest.mark.parametrize("how", FAILURES)
def test_a_listing_fails_with_eio_in_bounded_time_and_the_mount_recovers(
        s3_store, moto_server, mounts, proxy, how):
    """Eight `ls` at once: all fail together, within the bound, none waiting behind another's
    listing; then lookups fail at once until the back-off is over."""
    s3_store.add(WHEEL, b"wheel")
    mountpoint = mount_via(proxy, moto_server, mounts, **{"pkgfs.cache_ttl": 0})
    assert run("ls", mountpoint).stdout.split() == ["my-pkg"]

    break_endpoint(proxy, how)
    started = time.monotonic()
    listings = [subprocess.Popen(["ls", mountpoint], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(8)]
    answers = [listing.communicate(timeout=HANG) for listing in listings]
    assert time.monotonic() - started < BOUND
    assert all("Input/output error" in errors for _, errors in answers), answers
    failed = run(*["stat", "-c", "%s", mountpoint / "my-pkg" / WHEEL])
    assert "Input/output error" in failed.stderr  # the back-off: at once
    if how == "throttled":
        assert "S3 error SlowDown" in mounts.logs()

    proxy.restore()
    time.sleep(RETRY_AFTER)
    assert run("ls", mountpoint).stdout.split() == ["my-pkg"]


def test_a_process_waiting_on_a_dripping_endpoint_can_be_killed(s3_store, moto_server, mounts,
                                                                proxy):
    s3_store.add(WHEEL, b"wheel")
    mountpoint = mount_via(proxy, moto_server, mounts, **{"pkgfs.cache_ttl": 0})
    assert run("ls", mountpoint).stdout.split() == ["my-pkg"]
    proxy.drip = 0.2
    listing = subprocess.Popen(["ls", "-lR", mountpoint], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    listing.kill()
    assert listing.wait(timeout=BOUND) == -signal.SIGKILL


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_a_mount_in_use_lists_ahead_and_never_shows_a_listing_past_cache_ttl(
        s3_store, moto_server, mounts, proxy):
    """A listing used at half its cache_ttl is made again in the background, so ls
    answers at once past the first listing's cache_ttl, even with S3 down; but no
    listing is shown past its own cache_ttl."""
    ttl = 8
    s3_store.add(WHEEL, b"wheel")
    mountpoint = mount_via(proxy, moto_server, mounts, **{"pkgfs.cache_ttl": ttl})
    assert run("ls", mountpoint).stdout.split() == ["my-pkg"]
    first_expires = time.monotonic() + ttl
    s3_store.add("other-1.0.tar.gz", b"sdist")  # by another machine

    sleep_until(first_expires - ttl / 2)
    assert run("ls", mountpoint).stdout.split() == ["my-pkg"]  # the cached listing, while...
    while "other" not in run("ls", mountpoint).stdout.split():  # ...a new one is made
        assert time.monotonic() < first_expires - 1, "no listing ahead of cache_ttl"
        time.sleep(0.1)
    second_expires = time.monotonic() + ttl

    proxy.cut()
    sleep_until(first_expires + 0.3)
    assert run("ls", mountpoint).stdout.split() == ["my-pkg", "other"]
    sleep_until(second_expires + 0.3)
    failed = run("ls", mountpoint)
    assert "Input/output error" in failed.stderr

    proxy.restore()
    time.sleep(RETRY_AFTER)
    assert run("ls", mountpoint).stdout.split() == ["my-pkg", "other"]


@pytest.mark.parametrize("how", FAILURES)
def test_a_read_fails_with_eio_and_the_mount_recovers(s3_store, moto_server, mounts, proxy, how):
    data = os.urandom(6 << 20)
    s3_store.add(WHEEL, data)
    mountpoint = mount_via(proxy, moto_server, mounts)
    path = mountpoint / "my-pkg" / WHEEL

    with open(path, "rb", buffering=0) as package:
        assert package.read(4096) == data[:4096]
        break_endpoint(proxy, how)
        package.seek(5 << 20)
        started = time.monotonic()
        with pytest.raises(OSError) as raised:
            package.read(4096)
        assert raised.value.errno == errno.EIO
        assert time.monotonic() - started < BOUND
        proxy.restore()
        package.seek(5 << 20)
        assert package.read(4096) == data[5 << 20:(5 << 20) + 4096]
    assert path.read_bytes() == data


# A 503 answers a request: a body already streaming goes on.
@pytest.mark.parametrize("how", ["down", "hanging", "dripping"])
def test_a_sequential_read_broken_midway_fails_and_recovers(s3_store, moto_server, mounts, proxy,
                                                            how):
    data = os.urandom(24 << 20)
    s3_store.add(WHEEL, data)
    mountpoint = mount_via(proxy, moto_server, mounts)
    path = mountpoint / "my-pkg" / WHEEL

    with open(path, "rb", buffering=0) as package:
        assert package.read(4 << 20) == data[:4 << 20]  # streaming by now
        break_endpoint(proxy, how)
        with pytest.raises(OSError) as raised:
            while True:
                started = time.monotonic()  # of the read that fails (maybe the first)
                assert package.read(1 << 20)  # the file ends only after the break
        assert raised.value.errno == errno.EIO
        assert time.monotonic() - started < BOUND
    proxy.restore()
    assert path.read_bytes() == data


def test_a_copy_to_a_hanging_endpoint_fails_at_close(s3_store, moto_server, mounts, proxy,
                                                     tmp_path):
    mountpoint = mount_via(proxy, moto_server, mounts)
    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0"))

    proxy.stall()
    failed = run("cp", tmp_path / WHEEL, mountpoint)
    assert failed.returncode != 0
    assert "Input/output error" in failed.stderr
    proxy.restore()
    assert s3_store.contents() == []
    time.sleep(RETRY_AFTER)  # the failed listing's back-off
    assert run("cp", tmp_path / WHEEL, mountpoint).returncode == 0
    assert s3_store.stored(WHEEL)[0] == (tmp_path / WHEEL).read_bytes()


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_a_daemon_killed_in_the_middle_of_a_copy(backend, request, moto_server, mounts, tmp_path):
    store = request.getfixturevalue(f"{backend}_store")
    if backend == "file":
        os.makedirs(store.directory)
        config = file_config(store, **{"pkgfs.cache_dir": tmp_path / "cache"})
    else:
        config = s3_config(moto_server, **{"pkgfs.cache_dir": tmp_path / "cache"})
    mountpoint = mounts.mount(config)
    data = wheel("my-pkg", "1.0", padding=1 << 20)

    package = open(mountpoint / WHEEL, "wb", buffering=0)
    package.write(data[: len(data) // 2])
    pid = int(next(mounts.state.glob("pkgfs/*.pid")).read_text())
    os.kill(pid, signal.SIGKILL)
    mounts.mounted.remove(mountpoint)
    with pytest.raises(OSError) as raised:
        package.write(data[len(data) // 2:])
        package.close()
    assert raised.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    assert store.contents() == []

    remounted = pkgfs("mount", str(mountpoint), "-c", str(tmp_path / "mnt.conf"), env=mounts.env)
    assert remounted.returncode == 0, remounted.stderr
    mounts.mounted.append(mountpoint)
    assert "clearing a stale mount" in remounted.stderr
    assert f"removed {tmp_path / 'cache' / 'staging'}/mount-{pid}-" in remounted.stderr
    staging = tmp_path / "cache" / "staging"
    assert len(list(staging.iterdir())) == 1 and staged_files(staging) == []
    assert run("cp", tmp_path / "mnt.conf", mountpoint).returncode != 0  # not a distribution
    (tmp_path / WHEEL).write_bytes(data)
    assert run("cp", tmp_path / WHEEL, mountpoint).returncode == 0
    assert store.stored(WHEEL)[0] == data


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a staging disk that fills up."""
    skip_unless_root("mounting a tmpfs")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_staging_disk_fails_the_copy_and_stores_nothing(store_and_config, mounts, tmp_path,
                                                               small_disk):
    store, config = store_and_config
    mountpoint = mounts.mount(config(**{"pkgfs.cache_dir": small_disk}))
    big = tmp_path / "big_pkg-1.0-py3-none-any.whl"
    big.write_bytes(wheel("big-pkg", "1.0", padding=8 << 20))

    failed = run("cp", big, mountpoint)
    assert failed.returncode != 0
    assert "No space left on device" in failed.stderr
    assert store.contents() == []
    assert os.listdir(mountpoint) == []
    assert len(list((small_disk / "staging").iterdir())) == 1
    assert staged_files(small_disk / "staging") == []

    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0"))
    assert run("cp", tmp_path / WHEEL, mountpoint).returncode == 0  # the mount still works
    assert os.listdir(mountpoint) == ["my-pkg"]


def test_an_endpoint_that_ignores_range_never_serves_bytes_from_elsewhere(s3_store, proxy,
                                                                          moto_server, mounts):
    data = os.urandom(8 << 20)  # past what a first read fetches whole
    s3_store.add("ranged-1.0.tar.gz", data)
    mountpoint = mounts.mount(s3_config(moto_server, **{"aws.endpoint_url": proxy.endpoint}))
    path = mountpoint / "ranged" / "ranged-1.0.tar.gz"
    os.listdir(mountpoint / "ranged")
    proxy.drop_range = True
    with open(path, "rb") as reader:
        reader.seek(5 << 20)
        with pytest.raises(OSError) as raised:
            reader.read(4096)
    assert raised.value.errno == errno.EIO
    assert "must support Range" in mounts.logs()
    proxy.drop_range = False
    with open(path, "rb") as reader:
        reader.seek(5 << 20)
        assert reader.read(4096) == data[5 << 20:(5 << 20) + 4096]


def test_a_store_removed_under_the_mount_is_an_error_never_an_empty_mount(store_and_config,
                                                                          mounts):
    store, config = store_and_config
    store.add(WHEEL, wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(config(**{"pkgfs.cache_ttl": 0}))
    assert os.listdir(mountpoint) == ["my-pkg"]
    if hasattr(store, "directory"):
        shutil.rmtree(store.directory)
        gone = "storage.dir"
    else:
        for key in [key for key in store.contents() if not key.startswith("multipart")]:
            store.client.delete_object(Bucket=store.bucket, Key=key)
        store.client.delete_bucket(Bucket=store.bucket)
        gone = f"bucket {store.bucket}"
    listed = subprocess.run(["ls", mountpoint], capture_output=True, text=True, timeout=HANG)
    assert listed.returncode != 0 and "Input/output error" in listed.stderr
    assert f"{gone}" in mounts.logs() and "does not exist any more" in mounts.logs()


@pytest.mark.parametrize("endpoint", ["honours", "ignores"])
def test_an_endpoint_that_ignores_if_none_match_is_told_once(s3_store, moto_server, mounts,
                                                             proxy, tmp_path, endpoint):
    """Checked at the first copy of a mount by putting its bytes again conditionally; where
    the endpoint would overwrite, a copy asks with a HEAD first and is refused."""
    proxy.drop_if_none_match = endpoint == "ignores"
    mountpoint = mount_via(proxy, moto_server, mounts, **{"pkgfs.cache_ttl": 600})
    os.listdir(mountpoint)
    for number in range(3):
        (tmp_path / f"first-1.{number}.tar.gz").write_bytes(b"ours %d" % number)
        assert run("cp", tmp_path / f"first-1.{number}.tar.gz", mountpoint).returncode == 0
        assert s3_store.stored(f"first-1.{number}.tar.gz")[0] == b"ours %d" % number
    told = mounts.logs().count("ignores If-None-Match")
    assert told == (1 if endpoint == "ignores" else 0), mounts.logs()

    s3_store.add("taken-1.0.tar.gz", b"another machine's")  # not in this mount's listing
    (tmp_path / "taken-1.0.tar.gz").write_bytes(b"ours")
    refused = run("cp", tmp_path / "taken-1.0.tar.gz", mountpoint)
    assert "File exists" in refused.stderr
    assert s3_store.stored("taken-1.0.tar.gz")[0] == b"another machine's"
