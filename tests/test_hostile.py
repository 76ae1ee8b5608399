"""Bad input never crashes the daemon or escapes the tree: hostile stores, fuzzed names, other users."""

import errno
import hashlib
import io
import json
import os
import string
import subprocess
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CREDENTIALS, file_config, s3_config
from pkgfs.names import parse_filename
from stores import wheel, with_member_header

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


def hostile_wheels() -> dict[str, bytes]:
    """Wheels whose METADATA cannot be read, or is a zip bomb, as anyone may upload them."""
    def metadata_of(version):
        return f"bad-{version}.dist-info/METADATA"

    corrupt = bytearray(wheel("bad", "4.0", summary="x" * 2000))
    with zipfile.ZipFile(io.BytesIO(bytes(corrupt))) as archive:
        info = archive.getinfo(metadata_of("4.0"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    corrupt[start + 10:start + 40] = b"\xff" * 30  # the deflate stream, broken
    bomb = b"Metadata-Version: 2.1\nName: bad\nVersion: 5.0\n\n" + b" " * (100 << 20)
    return {
        "bad-2.0-py3-none-any.whl": with_member_header(wheel("bad", "2.0"), metadata_of("2.0"),
                                                       flags=0x1),  # encrypted
        "bad-3.0-py3-none-any.whl": with_member_header(wheel("bad", "3.0"), metadata_of("3.0"),
                                                       method=9),  # Deflate64
        "bad-4.0-py3-none-any.whl": bytes(corrupt),
        "bad-5.0-py3-none-any.whl": wheel("bad", "5.0", metadata=bomb),  # 100 MiB inflated
        "bad-6.0-py3-none-any.whl": b"not a zip at all",
    }


def daemon_peak_rss_mib(mounts) -> float:
    [pid_file] = mounts.state.glob("pkgfs/*.pid")
    status = Path(f"/proc/{int(pid_file.read_text())}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmHWM:"))) / 1024


def test_hostile_wheels_and_metadata_leave_their_project_working(store_and_config, mounts,
                                                                 tmp_path):
    store, config = store_and_config
    good = wheel("bad", "1.0", requires_python=">=3")
    store.add("bad-1.0-py3-none-any.whl", good)
    hostile = hostile_wheels()
    for name, data in hostile.items():
        store.add(name, data)
    if hasattr(store, "directory"):  # a .meta nested 100,000 deep
        path = store.add("bad-0.1.tar.gz", b"sdist", meta=None)
        Path(path + ".meta").write_text("[" * 100_000 + "]" * 100_000)
    else:  # S3 metadata that parses as nothing
        store.client.put_object(Bucket=store.bucket, Key=store.key("bad-0.1.tar.gz"),
                                Body=b"sdist", Metadata={"hash-sha256": "z" * 64,
                                                         "requires-python": "=>< 3"})
    mountpoint = mounts.mount(config())

    for _ in range(2):
        document = json.loads((mountpoint / "bad" / "index.json").read_bytes())
        files = {entry["filename"]: entry for entry in document["files"]}
        assert sorted(files) == sorted(["bad-0.1.tar.gz", "bad-1.0-py3-none-any.whl", *hostile])
        assert files["bad-0.1.tar.gz"]["hashes"] == {"sha256": hashlib.sha256(b"sdist").hexdigest()}
        assert files["bad-1.0-py3-none-any.whl"]["core-metadata"] != False  # noqa: E712
        assert (mountpoint / "bad" / "bad-1.0-py3-none-any.whl.metadata").is_file()
        for name in hostile:
            assert files[name]["core-metadata"] is False, name
            assert files[name]["hashes"] == {"sha256": hashlib.sha256(hostile[name]).hexdigest()}
            assert not (mountpoint / "bad" / f"{name}.metadata").exists(), name
        assert "bad-2.0-py3-none-any.whl" in (mountpoint / "bad" / "index.html").read_text()

    # A bomb copied in through the mount is stored, with what could be read.
    (tmp_path / "bomb-1.0-py3-none-any.whl").write_bytes(hostile["bad-5.0-py3-none-any.whl"])
    subprocess.run(["cp", tmp_path / "bomb-1.0-py3-none-any.whl", mountpoint], check=True)
    assert store.stored("bomb-1.0-py3-none-any.whl") is not None

    logs = mounts.logs()
    for name in hostile:
        assert logs.count(f"bad/{name}: no core metadata to serve") == 1, name
    if hasattr(store, "directory"):
        assert logs.count("bad-0.1.tar.gz.meta is unreadable metadata") == 1
    assert "Traceback" not in logs
    assert daemon_peak_rss_mib(mounts) < 200
