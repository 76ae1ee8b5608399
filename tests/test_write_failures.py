"""A copy that fails says so at close and leaves nothing behind; the mount recovers."""

import errno
import subprocess

import pytest

from harness import staged_files
from conftest import s3_config
from proxy import CuttableProxy
from stores import wheel

WHEEL = "my_pkg-1.0-py3-none-any.whl"


@pytest.fixture
def proxy(moto_server):
    proxy = CuttableProxy(moto_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def s3_via_proxy(s3_store, moto_server, proxy, mounts, tmp_path):
    """A mount whose S3 endpoint the test can take down, and its staging folder."""
    mountpoint = mounts.mount(s3_config(moto_server, **{
        "aws.endpoint_url": proxy.endpoint, "pkgfs.timeout": 1,
        "pkgfs.cache_dir": tmp_path / "cache"}))
    staging = tmp_path / "cache" / "staging"
    return mountpoint, staging


def test_endpoint_down_in_the_middle_of_a_copy(s3_store, proxy, s3_via_proxy, tmp_path):
    mountpoint, staging = s3_via_proxy
    data = wheel("my-pkg", "1.0", padding=2 << 20)
    half = len(data) // 2

    package = open(mountpoint / WHEEL, "wb")
    package.write(data[:half])
    package.flush()
    proxy.cut()
    package.write(data[half:])
    with pytest.raises(OSError) as raised:
        package.close()
    assert raised.value.errno == errno.EIO
    assert s3_store.contents() == []
    assert staged_files(staging) == []

    (tmp_path / WHEEL).write_bytes(data)
    failed = subprocess.run(["cp", tmp_path / WHEEL, mountpoint], capture_output=True, text=True)
    assert failed.returncode != 0
    assert "Input/output error" in failed.stderr

    proxy.restore()
    subprocess.run(["cp", tmp_path / WHEEL, mountpoint], check=True)
    assert (mountpoint / "my-pkg" / WHEEL).read_bytes() == data
    assert s3_store.stored(WHEEL)[0] == data
    assert staged_files(staging) == []


def test_a_multipart_upload_cut_in_the_middle_leaves_nothing(s3_store, proxy, s3_via_proxy,
                                                             tmp_path, mounts):
    mountpoint, staging = s3_via_proxy
    big = tmp_path / "big_pkg-1.0-py3-none-any.whl"
    big.write_bytes(wheel("big-pkg", "1.0", padding=80 << 20))  # above the multipart threshold

    proxy.cut_after(40 << 20)
    failed = subprocess.run(["cp", big, mountpoint], capture_output=True, text=True)
    assert failed.returncode != 0
    assert "Input/output error" in failed.stderr
    proxy.restore()
    assert s3_store.client.list_objects_v2(Bucket=s3_store.bucket).get("Contents", []) == []

    # The next copy, once S3 answers again, aborts what the failed one left open.
    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0"))
    subprocess.run(["cp", tmp_path / WHEEL, mountpoint], check=True)
    assert s3_store.contents() == [s3_store.key(WHEEL)]
    assert "aborted the multipart upload" in mounts.logs()
    assert staged_files(staging) == []

    subprocess.run(["cp", big, mountpoint], check=True)
    assert s3_store.stored(big.name)[0] == big.read_bytes()
