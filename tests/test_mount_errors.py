"""Every way a mount can fail says what is wrong in one line, and never hangs."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

import boto3
import pytest

from conftest import MotoServer, file_config, pkgfs, s3_config


def mount_fails(mounts, config_text, *options, mountpoint=None, env=None):
    """Run ``pkgfs mount``, expect it to fail; return its one line of error."""
    if mountpoint is None:
        mountpoint = mounts.tmp_path / "mnt"
        mountpoint.mkdir(exist_ok=True)
    mounted_before = os.path.ismount(mountpoint)
    arguments = ["mount", str(mountpoint), *options]
    if config_text is not None:
        config_path = mounts.tmp_path / "bad.conf"
        config_path.write_text(config_text)
        arguments += ["-c", str(config_path)]
    result = pkgfs(*arguments, env={**mounts.env, **(env or {})})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "WARNING" not in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("pkgfs: error: ")
    assert "Traceback" not in result.stderr
    assert os.path.ismount(mountpoint) == mounted_before
    return errors[0]


def test_missing_config_file(mounts):
    result = pkgfs("mount", str(mounts.tmp_path), "-c", "/nonexistent/pkgfs.conf", env=mounts.env)
    assert result.returncode == 2
    assert result.stderr.strip() == \
        "pkgfs: error: config file /nonexistent/pkgfs.conf not found: pass an existing file with -c"


def test_invalid_value(mounts, file_store):
    error = mount_fails(mounts, file_config(file_store, **{"pkgfs.cache_ttl": "soon"}))
    assert "pkgfs.cache_ttl = soon is not a number of seconds" in error


def test_unknown_storage_kind(mounts):
    error = mount_fails(mounts, "[pkgfs]\npypi.storage = azure\n")
    assert "pypi.storage = azure is not a storage pkgfs supports: use file or s3" in error


def test_bucket_with_a_dot(mounts, moto_server):
    error = mount_fails(mounts, s3_config(moto_server, **{"aws.bucket": "my.bucket"}))
    assert "must not contain '.'" in error


def test_missing_storage_dir(mounts, tmp_path):
    error = mount_fails(mounts, f"[pkgfs]\nstorage.dir = {tmp_path / 'absent'}\n")
    assert f"storage.dir {tmp_path / 'absent'} is not a directory" in error


def test_unknown_keys_are_warned_about_on_the_terminal(mounts, file_store):
    os.makedirs(file_store.directory)
    mountpoint = mounts.tmp_path / "mnt"
    mountpoint.mkdir()
    config = mounts.tmp_path / "typo.conf"
    config.write_text(file_config(file_store, **{"pkgfs.cache_tll": "5"}))
    result = pkgfs("mount", str(mountpoint), "-c", str(config), env=mounts.env)
    assert result.returncode == 0
    mounts.mounted.append(mountpoint)
    assert "unknown option pkgfs.cache_tll" in result.stderr


def test_mount_point_missing(mounts, file_store):
    os.makedirs(file_store.directory)
    error = mount_fails(mounts, file_config(file_store), mountpoint=mounts.tmp_path / "absent")
    assert "does not exist: create it with mkdir" in error


def test_mount_point_not_a_directory(mounts, file_store):
    os.makedirs(file_store.directory)
    not_a_directory = mounts.tmp_path / "file"
    not_a_directory.write_text("x")
    error = mount_fails(mounts, file_config(file_store), mountpoint=not_a_directory)
    assert "is not a directory" in error


def test_already_mounted(mounts, file_store):
    os.makedirs(file_store.directory)
    mountpoint = mounts.mount(file_config(file_store))
    error = mount_fails(mounts, file_config(file_store), mountpoint=mountpoint)
    assert f"{mountpoint} is already mounted: run 'pkgfs umount {mountpoint}' first" in error
    assert os.listdir(mountpoint) == []  # the first mount still serves


def kill_daemon(mounts, mountpoint):
    """SIGKILL the daemon, leaving its mount stale; the mount is then the test's to clear."""
    pid_file = next(mounts.state.glob("pkgfs/*.pid"))
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    mounts.mounted.remove(mountpoint)
    with pytest.raises(OSError) as raised:
        for _ in range(100):
            os.listdir(mountpoint)
            time.sleep(0.05)
    assert raised.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)


def test_stale_mount_is_cleared_by_the_next_mount(mounts, file_store):
    file_store.add("my_pkg-1.0.tar.gz", b"x")
    mountpoint = mounts.mount(file_config(file_store))
    kill_daemon(mounts, mountpoint)

    result = pkgfs("mount", str(mountpoint), "-c", str(mounts.tmp_path / "mnt.conf"), env=mounts.env)
    assert result.returncode == 0, result.stderr
    assert "clearing a stale mount" in result.stderr
    mounts.mounted.append(mountpoint)
    assert os.listdir(mountpoint) == ["my-pkg"]


def test_stale_mount_is_cleared_by_umount(mounts, file_store):
    os.makedirs(file_store.directory)
    mountpoint = mounts.mount(file_config(file_store))
    kill_daemon(mounts, mountpoint)

    result = pkgfs("umount", str(mountpoint), env=mounts.env)
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(mountpoint)
    assert os.listdir(mountpoint) == []


def test_umount_of_what_is_not_mounted(mounts):
    result = pkgfs("umount", str(mounts.tmp_path), env=mounts.env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"pkgfs: error: {mounts.tmp_path} is not mounted"


def test_missing_bucket_is_created_in_its_region(mounts, moto_server, s3_client):
    mounts.mount(s3_config(moto_server, **{"aws.bucket": "fresh-bucket",
                                           "aws.region": "eu-west-1"}))
    location = s3_client.get_bucket_location(Bucket="fresh-bucket")["LocationConstraint"]
    assert location == "eu-west-1"


def test_missing_bucket_that_cannot_be_created(mounts, moto_server):
    error = mount_fails(mounts, s3_config(moto_server, **{"aws.bucket": "ab"}))
    assert "bucket ab does not exist and could not be created" in error


def test_unreachable_endpoint(mounts):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    error = mount_fails(mounts, "[pkgfs]\npypi.storage = s3\naws.bucket = b1\n"
                                f"aws.endpoint_url = http://127.0.0.1:{port}\n"
                                "aws.access_key = a\naws.secret_key = b\npkgfs.timeout = 1\n")
    assert f"cannot reach http://127.0.0.1:{port}" in error
    assert "check aws.endpoint_url" in error


def test_endpoint_that_never_answers_times_out(mounts):
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        error = mount_fails(mounts, "[pkgfs]\npypi.storage = s3\naws.bucket = b1\n"
                                    f"aws.endpoint_url = http://127.0.0.1:{port}\n"
                                    "aws.access_key = a\naws.secret_key = b\npkgfs.timeout = 0.5\n")
    assert f"http://127.0.0.1:{port} did not answer within 0.5s (pkgfs.timeout)" in error


@pytest.fixture(scope="module")
def authenticating_s3(tmp_path_factory):
    """A moto server that checks credentials after its first two requests, which make a user."""
    server = MotoServer(tmp_path_factory.mktemp("moto-auth") / "requests.log")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "2"
    try:
        server.start()
    finally:
        del os.environ["INITIAL_NO_AUTH_ACTION_COUNT"]
    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="pkgfs")
    key = iam.create_access_key(UserName="pkgfs")["AccessKey"]
    yield server, key["AccessKeyId"]
    server.stop()


def test_unknown_access_key(mounts, authenticating_s3):
    server, _ = authenticating_s3
    error = mount_fails(mounts, s3_config(server, **{"aws.access_key": "AKIAUNKNOWN"}))
    assert "does not know the access key: check aws.access_key" in error


def test_wrong_secret_key(mounts, authenticating_s3):
    server, access_key = authenticating_s3
    error = mount_fails(mounts, s3_config(server, **{"aws.access_key": access_key,
                                                     "aws.secret_key": "wrong-secret"}))
    assert "refused the secret key for this access key: check aws.secret_key" in error
    assert "wrong-secret" not in error


def test_no_credentials_at_all(mounts, moto_server):
    config = s3_config(moto_server, **{"aws.access_key": None, "aws.secret_key": None})
    empty = mounts.tmp_path / "empty"
    empty.write_text("")
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE":
           str(empty), "AWS_CONFIG_FILE": str(empty), "AWS_EC2_METADATA_DISABLED": "true"}
    error = mount_fails(mounts, config, env=env)
    assert "no AWS credentials" in error


def test_credentials_from_the_environment(mounts, moto_server, s3_store):
    s3_store.add("my_pkg-1.0.tar.gz", b"x")
    config = s3_config(moto_server, **{"aws.access_key": None, "aws.secret_key": None})
    mounts.env.update(AWS_ACCESS_KEY_ID="from-env", AWS_SECRET_ACCESS_KEY="from-env")
    mountpoint = mounts.mount(config)
    assert os.listdir(mountpoint) == ["my-pkg"]


def test_libfuse_missing(mounts, file_store):
    os.makedirs(file_store.directory)
    error = mount_fails(mounts, file_config(file_store),
                        env={"FUSE_LIBRARY_PATH": "/nonexistent/libfuse3.so.3"})
    assert "libfuse 3 cannot be loaded (/nonexistent/libfuse3.so.3: cannot open shared " \
        "object file: No such file or directory): install it with 'apt-get install fuse3'" \
        in error


def test_foreground_mount_serves_until_unmounted(mounts, file_store):
    file_store.add("my_pkg-1.0.tar.gz", b"x")
    mountpoint = mounts.tmp_path / "fg"
    mountpoint.mkdir()
    config = mounts.tmp_path / "fg.conf"
    config.write_text(file_config(file_store))
    daemon = subprocess.Popen([sys.executable, "-m", "pkgfs", "mount", "-f", str(mountpoint),
                               "-c", str(config)], stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.ismount(mountpoint) or daemon.poll() is not None:
                break
            time.sleep(0.05)
        assert os.listdir(mountpoint) == ["my-pkg"]
        assert pkgfs("umount", str(mountpoint), env=mounts.env).returncode == 0
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)])
    assert "Traceback" not in daemon.stderr.read()


def test_every_operation_turns_errors_into_errno():
    """mfusepy calls each operation itself (no ``__call__``): each must pass fs._answered, or
    a pkgfs error reaches the user as EINVAL and the log as a traceback."""
    from pkgfs.fs import PackageFS
    from pkgfs.libfuse import fuse
    offered = [name for name, value in vars(PackageFS).items() if callable(value)
               and not name.startswith("_") and callable(getattr(fuse.Operations, name, None))]
    assert len(offered) > 20
    assert [name for name in offered if not hasattr(getattr(PackageFS, name), "__wrapped__")] == []
