"""What each operation promises (README, "Semantics"), through real mounts and real tools."""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stores import _ascii, wheel

WHEEL = "my_pkg-1.0-py3-none-any.whl"


@pytest.mark.parametrize("allow_overwrite", ["false", "true"])
def test_appending_to_a_stored_file_is_refused_and_leaves_it_intact(store_and_config, mounts,
                                                                    allow_overwrite):
    store, config = store_and_config
    data = wheel("my-pkg", "1.0")
    store.add(WHEEL, data)
    mountpoint = mounts.mount(config(**{"pypi.allow_overwrite": allow_overwrite}))
    target = mountpoint / "my-pkg" / WHEEL

    appended = subprocess.run(["sh", "-c", f"echo more >> {target}"], capture_output=True,
                              text=True)
    assert appended.returncode != 0
    assert "Operation not permitted" in appended.stderr
    with pytest.raises(PermissionError):
        os.open(target, os.O_RDWR)  # changed in place: refused too
    assert store.stored(WHEEL)[0] == data
    assert target.read_bytes() == data
    assert "never appended to" in mounts.logs()


def test_rm_of_a_file_held_open_removes_it_and_the_reader_never_gets_other_bytes(
        store_and_config, mounts):
    store, config = store_and_config
    data = os.urandom(3 << 20)
    store.add("held-1.0.tar.gz", data)
    store.add("held-2.0.tar.gz", b"stays")
    mountpoint = mounts.mount(config())
    path = mountpoint / "held" / "held-1.0.tar.gz"
    with open(path, "rb") as reader:
        first = reader.read(1 << 20)
        removed = subprocess.run(["rm", path], capture_output=True, text=True)
        assert removed.returncode == 0, removed.stderr
        try:
            rest = reader.read()
        except OSError as error:
            assert error.errno == 5  # EIO: gone, and said so
        else:
            assert first + rest == data  # what was opened, whole
    assert store.stored("held-1.0.tar.gz") is None
    assert not path.exists()
    assert os.listdir(mountpoint / "held") == ["held-2.0.tar.gz"]  # no .fuse_hidden file


def test_df_shows_room_to_copy(store_and_config, mounts):
    store, config = store_and_config
    mountpoint = mounts.mount(config())
    space = os.statvfs(mountpoint)
    assert space.f_blocks > 0 and space.f_bavail * space.f_frsize > 1 << 30
    listed = subprocess.run(["df", "--output=avail", mountpoint], capture_output=True, text=True)
    assert int(listed.stdout.split()[-1]) > 0


def test_any_summary_publishes(store_and_config, mounts, tmp_path):
    """pypinyin's summary, and one in Latin-1 letters: stored as pypicloud stores them."""
    store, config = store_and_config
    mountpoint = mounts.mount(config())
    for name, summary in (("pypinyin", "汉字拼音转换模块/工具."), ("cafe", "Café crème, à la carte")):
        source = tmp_path / f"{name}-1.0-py3-none-any.whl"
        source.write_bytes(wheel(name, "1.0", summary=summary, requires_python=">=3.7"))
        copied = subprocess.run(["cp", source, mountpoint], capture_output=True, text=True)
        assert copied.returncode == 0, copied.stderr
        _, metadata = store.stored(source.name)
        if hasattr(store, "directory"):
            assert metadata["summary"] == summary  # the .meta keeps the text
            assert metadata["requires_python"] == ">=3.7"
        else:
            assert metadata["summary"] == _ascii(summary).strip()  # S3 folds it, as pypicloud
            assert metadata["requires-python"] == ">=3.7"
    assert "Traceback" not in mounts.logs()


def test_a_live_daemon_keeps_its_staging_folder_whatever_its_command_line(file_store, mounts,
                                                                          tmp_path):
    """A daemon run as systemd runs it (the installed script, in the foreground) is alive
    to a second mount sharing its cache_dir: its copies keep working."""
    os.makedirs(file_store.directory)
    config = tmp_path / "first.conf"
    config.write_text(f"[pkgfs]\nstorage.dir = {file_store.directory}\n")
    first = tmp_path / "first"
    first.mkdir()
    script = shutil.which("pkgfs", path=os.path.dirname(sys.executable))
    daemon = subprocess.Popen([script, "mount", "-f", str(first), "-c", str(config)],
                              env={**os.environ, **mounts.env}, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.ismount(first):
                break
            time.sleep(0.05)
        assert os.path.ismount(first)
        mounts.mount(f"[pkgfs]\nstorage.dir = {file_store.directory}\n", name="second")
        (tmp_path / "late-1.0.tar.gz").write_bytes(b"copied after the second mount")
        copied = subprocess.run(["cp", tmp_path / "late-1.0.tar.gz", first], capture_output=True,
                                text=True)
        assert copied.returncode == 0, copied.stderr
        assert file_store.stored("late-1.0.tar.gz")[0] == b"copied after the second mount"
    finally:
        subprocess.run(["fusermount3", "-u", str(first)], capture_output=True)
        daemon.wait(timeout=10)
    staging = Path(mounts.env["XDG_CACHE_HOME"]) / "pkgfs" / "staging"
    assert len(list(staging.glob("mount-*"))) == 1  # the second mount's; the first's is gone


def test_a_file_written_by_a_subshell_is_stored_once_whole(store_and_config, mounts, tmp_path):
    """``(cat a; cat b) > f``: each cat's exit closes an inherited descriptor; only the
    shell that opened the file stores it, at its own close."""
    store, config = store_and_config
    mountpoint = mounts.mount(config())
    (tmp_path / "a").write_bytes(b"first half " * 10_000)
    (tmp_path / "b").write_bytes(b"second half " * 10_000)
    target = mountpoint / "joined-1.0.tar.gz"
    written = subprocess.run(["sh", "-c", f"(cat {tmp_path / 'a'}; sleep 0.2; "
                                          f"cat {tmp_path / 'b'}) > {target}"],
                             capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    expected = (tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes()
    assert store.stored("joined-1.0.tar.gz")[0] == expected
    assert mounts.logs().count("stored joined/joined-1.0.tar.gz") == 1


def test_readers_of_a_file_being_written_never_store_it_and_writers_wait(store_and_config,
                                                                         mounts):
    store, config = store_and_config
    mountpoint = mounts.mount(config())
    target = mountpoint / "growing-1.0.tar.gz"
    with open(target, "wb") as writer:
        writer.write(b"x" * 100_000)
        writer.flush()
        peek = subprocess.run(["head", "-c", "10", target], capture_output=True)
        assert peek.returncode == 0 and peek.stdout == b"x" * 10  # what is staged so far
        assert store.stored("growing-1.0.tar.gz") is None  # the reader's close stored nothing
        second = subprocess.run(["sh", "-c", f"echo other > {target}"], capture_output=True,
                                text=True)
        assert second.returncode != 0 and "busy" in second.stderr.lower()
        writer.write(b"y" * 100_000)
    assert store.stored("growing-1.0.tar.gz")[0] == b"x" * 100_000 + b"y" * 100_000


def test_fsync_stores_and_later_writes_are_refused(store_and_config, mounts):
    store, config = store_and_config
    mountpoint = mounts.mount(config(**{"pypi.allow_overwrite": "true"}))
    descriptor = os.open(mountpoint / "synced-1.0.tar.gz", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(descriptor, b"whole")
        os.fsync(descriptor)
        assert store.stored("synced-1.0.tar.gz")[0] == b"whole"
        with pytest.raises(PermissionError):
            os.write(descriptor, b" and more")
    finally:
        os.close(descriptor)
    assert store.stored("synced-1.0.tar.gz")[0] == b"whole"


def test_publishing_the_same_bytes_again_succeeds_and_other_bytes_fail(store_and_config, mounts,
                                                                       tmp_path):
    store, config = store_and_config
    mountpoint = mounts.mount(config())
    dist = tmp_path / "dist"
    dist.mkdir()
    for version in ("1.0", "2.0"):
        (dist / f"my_pkg-{version}-py3-none-any.whl").write_bytes(wheel("my-pkg", version))
    for run in (1, 2):  # the second run re-sends every file: each is the same bytes
        synced = subprocess.run(["rsync", "-r", f"{dist}/", mountpoint], capture_output=True,
                                text=True)
        assert synced.returncode == 0, (run, synced.stderr)
    again = subprocess.run(["cp", dist / WHEEL, mountpoint / "my-pkg"], capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr
    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0", padding=10))  # other bytes
    other = subprocess.run(["cp", tmp_path / WHEEL, mountpoint], capture_output=True, text=True)
    assert other.returncode != 0 and "File exists" in other.stderr
    assert store.stored(WHEEL)[0] == (dist / WHEEL).read_bytes()


def test_a_name_another_mount_took_is_refused_though_this_mount_has_not_listed_it(
        store_and_config, mounts, tmp_path):
    store, config = store_and_config
    first = mounts.mount(config(), name="first")
    second = mounts.mount(config(**{"pkgfs.cache_ttl": 3600}), name="second")
    os.listdir(second)  # listed before the first mount's copy: it does not know of it
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "mine" / WHEEL).write_bytes(wheel("my-pkg", "1.0"))
    (tmp_path / "theirs" / WHEEL).write_bytes(wheel("my-pkg", "1.0", padding=10))
    subprocess.run(["cp", tmp_path / "mine" / WHEEL, first], check=True)
    late = subprocess.run(["cp", tmp_path / "theirs" / WHEEL, second], capture_output=True,
                          text=True)
    assert late.returncode != 0 and "File exists" in late.stderr
    data, metadata = store.stored(WHEEL)
    assert data == (tmp_path / "mine" / WHEEL).read_bytes()
    assert hashlib.sha256(data).hexdigest() in metadata.values()


def test_of_two_mounts_copying_one_name_at_once_exactly_one_wins(file_store, mounts, tmp_path):
    """20 rounds of two cp processes, one per mount of one file store, one name each round.
    (S3's side of this is its conditional writes: tests/test_storage_contract.py.)"""
    os.makedirs(file_store.directory)
    config = f"[pkgfs]\nstorage.dir = {file_store.directory}\n"
    mountpoints = [mounts.mount(config, name="a"), mounts.mount(config, name="b")]
    for round_number in range(20):
        name = f"race-1.{round_number}.tar.gz"
        sources = []
        for side in ("a", "b"):
            folder = tmp_path / f"from-{side}"
            folder.mkdir(exist_ok=True)
            (folder / name).write_bytes(f"{side} {round_number} ".encode() * 50_000)
            sources.append(folder / name)
        copies = [subprocess.Popen(["cp", source, mountpoint], stderr=subprocess.PIPE, text=True)
                  for source, mountpoint in zip(sources, mountpoints)]
        results = [(copy.wait(), copy.stderr.read()) for copy in copies]
        assert sorted(code for code, _ in results) == [0, 1], (round_number, results)
        loser = next(error for code, error in results if code)
        assert "File exists" in loser
        winner = sources[[code for code, _ in results].index(0)]
        data, metadata = file_store.stored(name)
        assert data == winner.read_bytes()
        assert metadata["hash_sha256"] == hashlib.sha256(data).hexdigest()


def test_temporaries_a_dead_writer_left_in_a_file_store_are_removed(file_store, mounts):
    """pkgfs's own hidden temporaries older than an hour (no copy into place takes that
    long) are removed at the next listing; fresh ones, and others' hidden files, stay."""
    file_store.add("my_pkg-1.0.tar.gz", b"x")
    folder = os.path.join(file_store.directory, "my-pkg", "1.0")
    names = {".metadata.0123456789abcdef": True, ".my_pkg-2.0.tar.gz.fedcba9876543210": True,
             ".metadata.00112233445566ff": False, ".someone-elses": False}
    for name, old in names.items():
        path = os.path.join(folder, name)
        with open(path, "w") as temporary:
            temporary.write("left")
        if old or name == ".someone-elses":
            os.utime(path, (time.time() - 7200, time.time() - 7200))
    mountpoint = mounts.mount(f"[pkgfs]\nstorage.dir = {file_store.directory}\n")
    assert os.listdir(mountpoint / "my-pkg") == ["my_pkg-1.0.tar.gz"]
    left = sorted(name for name in os.listdir(folder) if name.startswith("."))
    assert left == [".metadata.00112233445566ff", ".someone-elses"]
    assert mounts.logs().count("left by a writer that died") == 2


def test_readers_on_another_mount_never_mix_versions_while_a_file_is_replaced(
        store_and_config, mounts, tmp_path):
    """One mount replaces a file again and again (allow_overwrite), each version of another
    size; readers on a second mount read it whole each time. Each read is one version
    whole, or an error, never a mix or a cut: outcomes counted over the rounds."""
    store, config = store_and_config
    versions = [bytes([65 + number]) * (300_000 + 70_000 * number) for number in range(6)]
    hashes = {hashlib.sha256(version).hexdigest(): number for number, version in enumerate(versions)}
    store.add(WHEEL, versions[0])
    writer = mounts.mount(config(**{"pypi.allow_overwrite": "true"}), name="writer")
    reader = mounts.mount(config(**{"pypi.allow_overwrite": "true", "pkgfs.cache_ttl": 0.5}),
                          name="reader")
    for number, version in enumerate(versions):
        (tmp_path / f"v{number}").write_bytes(version)
    path = reader / "my-pkg" / WHEEL
    reading = subprocess.Popen(
        [sys.executable, "-c", _CHURN_READER, str(path), str(time.monotonic() + 12)],
        stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    replaced = 0
    while time.monotonic() < deadline:
        number = replaced % len(versions)
        subprocess.run(["cp", tmp_path / f"v{number}", writer / "my-pkg" / WHEEL], check=True)
        replaced += 1
        time.sleep(0.05)
    outcomes = [line.split() for line in reading.communicate(timeout=60)[0].splitlines()]
    seen = {hashes.get(digest, f"mixed:{size}") for kind, digest, size in outcomes
            if kind == "read"}
    reads = [outcome for outcome in outcomes if outcome[0] == "read"]
    assert all(isinstance(version, int) for version in seen), (seen, replaced)
    # Enough whole reads, across versions, for the count to mean something (on S3 a read
    # of a version replaced since the listing fails: pinned to its ETag).
    assert len(reads) >= 20 and len(seen) >= 2, (len(reads), seen, len(outcomes))


# Reads a file whole, again and again until a moment: one line an outcome.
_CHURN_READER = """
import hashlib, sys, time
path, until = sys.argv[1], float(sys.argv[2])
while time.monotonic() < until:
    try:
        with open(path, "rb") as package:
            data = package.read()
        print("read", hashlib.sha256(data).hexdigest(), len(data), flush=True)
    except OSError as error:
        print("error", error.errno, 0, flush=True)
"""
