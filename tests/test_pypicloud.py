"""pypicloud's own storage code against pkgfs: each reads what the other wrote."""

import io
import os
import subprocess

from pypicloud.models import Package
from pypicloud.storage.files import FileStorage as PypicloudFileStorage
from pypicloud.storage.s3 import S3Storage as PypicloudS3Storage
from pypicloud.util import EnvironSettings

from conftest import BUCKET, CREDENTIALS
from stores import wheel


def pypicloud_storage(store, moto_server):
    """pypicloud's storage of the same store, configured as a pypicloud server would be."""
    if hasattr(store, "directory"):
        settings = {"storage.dir": store.directory}
        return PypicloudFileStorage(**PypicloudFileStorage.configure(EnvironSettings(settings, {})))
    settings = {"storage.bucket": BUCKET, "storage.prefix": store.prefix,
                "storage.endpoint_url": moto_server.endpoint, "storage.region_name": "us-east-1",
                "storage.addressing_style": "path",
                "storage.aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "storage.aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    return PypicloudS3Storage(**PypicloudS3Storage.configure(EnvironSettings(settings, {})))


def test_pypicloud_lists_what_pkgfs_stored(store_and_config, moto_server, mounts, tmp_path):
    store, config = store_and_config
    data = wheel("my-pkg", "1.0", summary="Made by pkgfs", requires_python=">=3.9")
    (tmp_path / "My_Pkg-1.0-py3-none-any.whl").write_bytes(data)
    mountpoint = mounts.mount(config())
    subprocess.run(["cp", tmp_path / "My_Pkg-1.0-py3-none-any.whl", mountpoint], check=True)

    packages = list(pypicloud_storage(store, moto_server).list())
    assert len(packages) == 1
    package = packages[0]
    assert (package.name, package.version, package.filename) == \
        ("my-pkg", "1.0", "My_Pkg-1.0-py3-none-any.whl")
    metadata = package.get_metadata()
    assert metadata["summary"] == "Made by pkgfs"
    assert metadata["requires_python"] == ">=3.9"
    assert len(metadata["hash_sha256"]) == 64 and len(metadata["hash_md5"]) == 32


def test_pkgfs_shows_what_pypicloud_uploaded(store_and_config, moto_server, mounts):
    store, config = store_and_config
    if hasattr(store, "directory"):
        os.makedirs(store.directory, exist_ok=True)
    pypicloud = pypicloud_storage(store, moto_server)
    data = wheel("their-pkg", "2.0", summary="Made by pypicloud")
    package = Package("their-pkg", "2.0", "their_pkg-2.0-py3-none-any.whl",
                      summary="Made by pypicloud", hash_sha256="0" * 64)
    pypicloud.upload(package, io.BytesIO(data))
    mountpoint = mounts.mount(config())

    assert os.listdir(mountpoint) == ["their-pkg"]
    assert os.listdir(mountpoint / "their-pkg") == ["their_pkg-2.0-py3-none-any.whl"]
    assert (mountpoint / "their-pkg" / "their_pkg-2.0-py3-none-any.whl").read_bytes() == data


def test_pypicloud_no_longer_lists_what_pkgfs_deleted(store_and_config, moto_server, mounts):
    store, config = store_and_config
    store.add("gone-1.0.tar.gz", b"x")
    store.add("kept-1.0.tar.gz", b"y")
    mountpoint = mounts.mount(config())
    os.unlink(mountpoint / "gone" / "gone-1.0.tar.gz")

    assert [package.filename for package in pypicloud_storage(store, moto_server).list()] == \
        ["kept-1.0.tar.gz"]
