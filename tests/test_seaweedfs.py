"""A mount on SeaweedFS, an S3 server of the kind users run (it keeps keys as folders), not
moto's model of S3: what a user does with a store, against a second S3 implementation."""

import filecmp
import hashlib
import json
import subprocess

from conftest import s3_config
from stores import wheel

WHEEL = "my_pkg-1.0-py3-none-any.whl"
BIG = "big_pkg-1.0-py3-none-any.whl"  # past boto3's multipart threshold (8 MiB)


def run(*command) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def test_a_mount_on_seaweedfs_stores_reads_refuses_and_removes(seaweedfs, mounts, tmp_path):
    seaweedfs.create_bucket("mounted")
    mountpoint = mounts.mount(s3_config(seaweedfs, **{"aws.bucket": "mounted"}))
    (tmp_path / "first").mkdir()
    (tmp_path / "other").mkdir()
    small, big = tmp_path / "first" / WHEEL, tmp_path / "first" / BIG
    small.write_bytes(wheel("my-pkg", "1.0"))
    big.write_bytes(wheel("big-pkg", "1.0", padding=20 << 20))
    (tmp_path / "other" / WHEEL).write_bytes(wheel("my-pkg", "1.0", padding=100))

    assert run("cp", small, big, mountpoint).returncode == 0
    assert sorted(path.name for path in mountpoint.iterdir()) == ["big-pkg", "my-pkg"]
    assert filecmp.cmp(small, mountpoint / "my-pkg" / WHEEL, shallow=False)
    assert filecmp.cmp(big, mountpoint / "big-pkg" / BIG, shallow=False)

    assert run("cp", small, mountpoint).returncode == 0  # the same bytes again: nothing changes
    refused = run("cp", tmp_path / "other" / WHEEL, mountpoint)
    assert refused.returncode != 0 and "File exists" in refused.stderr
    assert filecmp.cmp(small, mountpoint / "my-pkg" / WHEEL, shallow=False)
    page = json.loads((mountpoint / "my-pkg" / "index.json").read_text())
    assert [(entry["filename"], entry["hashes"]["sha256"]) for entry in page["files"]] == [
        (WHEEL, hashlib.sha256(small.read_bytes()).hexdigest())]

    assert run("rm", mountpoint / "my-pkg" / WHEEL).returncode == 0
    assert sorted(path.name for path in mountpoint.iterdir()) == ["big-pkg"]
