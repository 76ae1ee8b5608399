"""pypicloud's own storage code against pkgfs: each reads what the other wrote."""

import collections
import hashlib
import io
import json
import os
import subprocess
import threading
import time

from pypicloud.models import Package
from pypicloud.storage.files import FileStorage as PypicloudFileStorage
from pypicloud.storage.s3 import S3Storage as PypicloudS3Storage
from pypicloud.util import EnvironSettings

from conftest import BUCKET, CREDENTIALS, file_config
from pkgfs.errors import AlreadyExists
from pkgfs.storage.file import FileStorage
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


def test_a_mount_and_pypicloud_storing_one_name_never_pair_one_meta_with_the_others_file(
        tmp_path):
    """pypicloud's upload() renames its .meta, then its file, over whatever is there. Raced
    against it 200 times, pkgfs either refuses (the other writer wins) or stores first and is
    then replaced; the file is always one writer's whole, beside that writer's .meta."""
    directory = tmp_path / "store"
    ours, theirs = FileStorage(str(directory)), pypicloud_storage(FileStorage(str(directory)), None)
    our_bytes, their_bytes = b"ours" * 50_000, b"theirs" * 25_000
    source = tmp_path / "source"
    source.write_bytes(our_bytes)
    outcomes = collections.Counter()
    for round in range(200):
        filename = f"pkg-{round}.tar.gz"
        (directory / "pkg" / str(round)).mkdir(parents=True)  # pypicloud's makedirs races too
        start = threading.Barrier(2)

        def pkgfs_stores():
            start.wait()
            try:
                ours.store("pkg", filename, str(source), _sha256_of(our_bytes), replace=False)
                outcomes["pkgfs stored"] += 1
            except AlreadyExists:
                outcomes["pkgfs refused"] += 1

        def pypicloud_uploads():
            start.wait()
            theirs.upload(Package("pkg", str(round), filename, **_sha256_of(their_bytes)),
                          io.BytesIO(their_bytes))

        threads = [threading.Thread(target=pkgfs_stores), threading.Thread(target=pypicloud_uploads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stored = directory / "pkg" / str(round) / filename
        data = stored.read_bytes()
        assert data in (our_bytes, their_bytes)
        meta = json.loads(stored.with_name(filename + ".meta").read_text())
        assert meta["hash_sha256"] == hashlib.sha256(data).hexdigest(), f"round {round}"
    assert outcomes["pkgfs refused"] > 0, outcomes  # the two did race


def test_a_copy_while_pypicloud_uploads_the_name_is_refused(file_store, mounts, tmp_path):
    """A slow pypicloud upload has put its .meta in place and is still writing the file: a
    copy of that name through a mount fails with File exists, and pages then show
    pypicloud's file with its own hash."""
    os.makedirs(file_store.directory)
    theirs = pypicloud_storage(file_store, None)
    their_bytes = wheel("their-pkg", "1.0", padding=256 << 10)
    filename = "their_pkg-1.0-py3-none-any.whl"
    (tmp_path / filename).write_bytes(wheel("their-pkg", "1.0", summary="ours"))
    mountpoint = mounts.mount(file_config(file_store, **{"pkgfs.cache_ttl": 0}))
    upload = threading.Thread(target=theirs.upload, args=(
        Package("their-pkg", "1.0", filename, **_sha256_of(their_bytes)),
        _SlowStream(their_bytes)))
    upload.start()
    meta = os.path.join(file_store.directory, "their-pkg", "1.0", filename + ".meta")
    while not os.path.exists(meta):
        time.sleep(0.01)

    copy = subprocess.run(["cp", tmp_path / filename, mountpoint], capture_output=True, text=True)
    upload.join()

    assert copy.returncode == 1 and "File exists" in copy.stderr, copy.stderr
    assert (mountpoint / "their-pkg" / filename).read_bytes() == their_bytes
    page = json.loads((mountpoint / "their-pkg" / "index.json").read_text())
    assert [file["hashes"]["sha256"] for file in page["files"]] == \
        [hashlib.sha256(their_bytes).hexdigest()]


class _SlowStream(io.BytesIO):
    """An upload that takes a second: pypicloud streams it into place in 16 KiB reads."""

    def read(self, size=-1):
        time.sleep(0.05)
        return super().read(size)


def _sha256_of(data: bytes) -> dict[str, str]:
    return {"hash_sha256": hashlib.sha256(data).hexdigest()}
