"""Bad input never crashes the daemon or escapes the tree: hostile stores, fuzzed names, other users."""

import errno
import os
import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CREDENTIALS, file_config, s3_config
from pkgfs.names import parse_filename
from stores import wheel

WHEEL = "my_pkg-1.0-py3-none-any.whl"


def assert_daemon_serves(mountpoint: Path, mounts) -> None:
    """The mount still answers, and the daemon logged no traceback."""
    os.listdir(mountpoint)
    assert "Traceback" not in mounts.logs()


def test_hostile_s3_keys_and_metadata(s3_store, moto_server, mounts):
    s3_store.add(WHEEL, wheel("my-pkg", "1.0"))
    client, bucket = s3_store.client, s3_store.bucket
    # Keys that climb (..), skip a level (//), are too long, or break the layout.
    for key in ("packages/abcd/../my_pkg-2.0.tar.gz", "packages/abcd//my_pkg-3.0.tar.gz",
                "packages//my-pkg/my_pkg-4.0.tar.gz", "packages/../../my_pkg-6.0.tar.gz",
                "packages/abcd/my-pkg/" + "x" * 300 + "-1.0.tar.gz",
                "packages/abcd/my-pkg/caf\u00e9-1.0.tar.gz",
                "packages/abcd/my-pkg/tab\tin-1.0.tar.gz",
                "packages/abcd/My Pkg/my_pkg-5.0.tar.gz", "packages/abcd/my-pkg/README"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    client.put_object(Bucket=bucket, Key=s3_store.key("evil-1.0.tar.gz"), Body=b"evil",
                      Metadata={"requires-python": '"><script>alert(1)</script>',
                                "hash-sha256": "not-a-hash", "summary": "x" * 1000})
    mountpoint = mounts.mount(s3_config(moto_server))

    assert sorted(os.listdir(mountpoint)) == ["evil", "my-pkg"]
    assert sorted(os.listdir(mountpoint / "my-pkg")) == ["caf\u00e9-1.0.tar.gz", WHEEL]
    page = (mountpoint / "evil" / "index.html").read_text()
    assert "<script>" not in page
    assert "data-requires-python" not in page  # not a specifier: left out, with a warning
    assert "Requires-Python '\"><script>" in mounts.logs()
    assert (mountpoint / "evil" / "evil-1.0.tar.gz").read_bytes() == b"evil"
    assert_daemon_serves(mountpoint, mounts)


def test_hostile_file_store(file_store, mounts, tmp_path):
    file_store.add(WHEEL, wheel("my-pkg", "1.0"))
    root = file_store.directory.encode()
    os.makedirs(root + b"/my-pkg/1.0", exist_ok=True)
    with open(root + b"/my-pkg/1.0/bad\xffname-1.0.tar.gz", "wb") as undecodable:
        undecodable.write(b"x")
    file_store.add("listmeta-1.0.tar.gz", b"x", meta=None)
    Path(file_store.directory, "listmeta", "1.0", "listmeta-1.0.tar.gz.meta").write_text("[1, 2]")
    file_store.add("binmeta-1.0.tar.gz", b"x", meta=None)
    Path(file_store.directory, "binmeta", "1.0", "binmeta-1.0.tar.gz.meta").write_bytes(
        b"\xff\xfe\x00garbage")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "1.0").mkdir()
    (outside / "1.0" / "secret-1.0.tar.gz").write_text("outside the store")
    os.symlink(outside, os.path.join(file_store.directory, "secret"))  # a project folder link
    os.symlink(outside / "1.0", os.path.join(file_store.directory, "my-pkg", "2.0"))
    mountpoint = mounts.mount(file_config(file_store))

    assert sorted(os.listdir(mountpoint)) == ["binmeta", "listmeta", "my-pkg"]
    assert sorted(os.listdir(mountpoint / "my-pkg")) == [WHEEL]
    for project in ("listmeta", "binmeta"):
        assert "#sha256=" in (mountpoint / project / "index.html").read_text()
    assert_daemon_serves(mountpoint, mounts)


@pytest.fixture
def fuzz_mount(file_store, mounts):
    os.makedirs(file_store.directory)
    return mounts.mount(file_config(file_store)), file_store


NAME_CHARACTERS = st.one_of(st.sampled_from(string.ascii_letters + string.digits + "-_.+ ~"),
                            st.characters(min_codepoint=1, max_codepoint=0x2FFF,
                                          blacklist_characters="/"))
# The mount is shared by every example: a name an earlier one made a folder
# is refused to a file with EISDIR.
REFUSALS = {errno.EINVAL, errno.EEXIST, errno.ENAMETOOLONG, errno.EPERM, errno.ENOENT,
            errno.EXDEV, errno.ENOTEMPTY, errno.EISDIR}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stem=st.text(NAME_CHARACTERS, min_size=1, max_size=40),
       suffix=st.sampled_from(["", "-1.0.tar.gz", "-1.0-py3-none-any.whl", ".whl", ".meta"]),
       operation=st.sampled_from(["create", "mkdir", "rename"]))
def test_fuzzed_names_never_reach_the_store_unchecked(fuzz_mount, mounts, stem, suffix,
                                                      operation):
    mountpoint, store = fuzz_mount
    name = stem + suffix
    if name in (".", ".."):
        return
    target = mountpoint / name
    try:
        if operation == "create":
            target.write_bytes(b"fuzz")
        elif operation == "mkdir":
            os.mkdir(target)
        else:
            staged = mountpoint / ".fuzz.tmp"
            staged.write_bytes(b"fuzz")
            os.rename(staged, target)
    except OSError as error:
        assert error.errno in REFUSALS, (name, error)
    inside = os.path.realpath(store.directory) + os.sep
    for path in store.contents():
        assert len(Path(path).parts) <= 3, path  # <project>/<version>/<file>, nothing deeper
        assert os.path.realpath(os.path.join(store.directory, path)).startswith(inside), path
        if len(Path(path).parts) == 3 and not path.endswith(".meta"):
            assert parse_filename(Path(path).name).project == Path(path).parts[0], path
    os.listdir(mountpoint)




def as_nobody(*command):
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *map(str, command)], capture_output=True, text=True)


@pytest.mark.parametrize("allow_other", [False, True])
def test_only_the_mounting_user_unless_allow_other(file_store, mounts, public_dir, allow_other):
    file_store.add(WHEEL, b"wheel")
    options = ["--allow-other"] if allow_other else []
    mountpoint = mounts.mount(file_config(file_store), *options, parent=public_dir)

    listing = as_nobody("ls", mountpoint)
    if allow_other:
        assert listing.returncode == 0 and listing.stdout.split() == ["my-pkg"]
        assert as_nobody("cat", mountpoint / "my-pkg" / WHEEL).stdout == "wheel"
    else:
        assert listing.returncode != 0
        assert "Permission denied" in listing.stderr


def test_secrets_never_reach_the_logs(s3_store, moto_server, mounts, tmp_path):
    s3_store.add(WHEEL, wheel("my-pkg", "1.0"))
    (tmp_path / "other-1.0.tar.gz").write_bytes(b"other")
    mountpoint = mounts.mount(s3_config(moto_server), "--debug")

    subprocess.run(["ls", "-lR", mountpoint], check=True, capture_output=True)
    subprocess.run(["cp", tmp_path / "other-1.0.tar.gz", mountpoint], check=True)
    (mountpoint / "my-pkg" / "index.html").read_text()
    subprocess.run(["cp", tmp_path / "other-1.0.tar.gz", mountpoint / "README"])
    logs = mounts.logs()
    assert "stored other/other-1.0.tar.gz" in logs and "create /README refused" in logs
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in logs
