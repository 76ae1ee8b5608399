"""Real parts: a moto S3 server on loopback, real FUSE mounts run by the pkgfs command."""

import os
import shutil
import tempfile
from pathlib import Path

import boto3
import pytest

from harness import (  # noqa: F401  (the tests import these from here)
    BUCKET,
    CREDENTIALS,
    Mounts,
    MotoServer,
    SeaweedServer,
    file_config,
    pkgfs,
    s3_config,
)
from stores import FileStore, S3Store



def fuse_unusable() -> str | None:
    """Why this user cannot mount FUSE filesystems here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: the mount tests need FUSE (modprobe fuse)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not open to this user: run the mount tests as root"
    return None


def skip_unless_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {what}")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "requests.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """SeaweedFS on loopback: each test makes a bucket of its own."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_client(moto_server):
    moto_server.reset()
    client = boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def file_store(tmp_path):
    return FileStore(tmp_path / "store")


@pytest.fixture
def s3_store(s3_client):
    return S3Store(s3_client, BUCKET, prefix="packages/")


@pytest.fixture
def mounts(tmp_path):
    reason = fuse_unusable()
    if reason:
        pytest.skip(reason)
    mounts = Mounts(tmp_path)
    yield mounts
    mounts.close()


@pytest.fixture(params=["file", "s3"])
def store_and_config(request, moto_server):
    """A store of either kind and the config that mounts it."""
    if request.param == "file":
        store = request.getfixturevalue("file_store")
        os.makedirs(store.directory, exist_ok=True)
        return store, lambda **options: file_config(store, **options)
    store = request.getfixturevalue("s3_store")
    return store, lambda **options: s3_config(moto_server, **options)


@pytest.fixture
def public_dir():
    """A folder other users can pass through, as nginx's workers must to reach a mount."""
    skip_unless_root("other users (nginx's workers, nobody) reach the mount only with "
                     "--allow-other, which needs root or user_allow_other in /etc/fuse.conf")
    folder = tempfile.mkdtemp(prefix="pkgfs-public-")
    os.chmod(folder, 0o755)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
