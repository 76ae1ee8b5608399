"""Real mounts of both backends, driven as a user drives them."""

import ctypes
import itertools
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from conftest import file_config, s3_config

WHEEL = "my_pkg-1.0-py3-none-any.whl"
SDIST = "my_pkg-1.0.tar.gz"
OTHER = "Other.Project-2.0b1.zip"


def payload(seed: str, size: int) -> bytes:
    block = (seed * 64).encode()[:64]
    return (block * (size // 64 + 1))[:size]


class _Dirent(ctypes.Structure):  # glibc's struct dirent on Linux
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


def read_folder(folder) -> Iterator[_Dirent]:
    """The folder's entries as readdir(3) gives them, one at a time, so that a test can act
    between two; each is good until the next is asked for."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.closedir.argtypes = [ctypes.c_void_p]
    handle = libc.opendir(os.fsencode(folder))
    assert handle, os.strerror(ctypes.get_errno())
    try:
        while entry := libc.readdir(handle):
            yield entry.contents
    finally:
        libc.closedir(handle)


def listed_types(folder) -> dict[str, int]:
    """Each name readdir gives, with the d_type it gives (what find and ls --color use to
    skip a stat of each entry; DT_UNKNOWN, 0, makes them stat it)."""
    found = {entry.d_name.decode(): entry.d_type for entry in read_folder(folder)}
    return {name: kind for name, kind in found.items() if name not in (".", "..")}


def test_readdir_gives_each_name_its_type(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add(WHEEL, b"wheel")
    mountpoint = mounts.mount(config())
    with open(mountpoint / SDIST, "wb") as staged:  # a file being copied to the root
        staged.write(b"sdist")
        assert listed_types(mountpoint) == {"my-pkg": 4, SDIST: 8}  # DT_DIR, DT_REG
    assert listed_types(mountpoint / "my-pkg") == {WHEEL: 8, SDIST: 8}


def test_a_folders_listing_brings_its_names_attributes(store_and_config, mounts):
    """readdirplus: once a folder is listed, stat of its names (what ls -l, find and
    nginx do next) asks the daemon nothing, for a root of more names than one answer of
    the daemon holds. A stopped daemon shows it: a stat that asks it waits until killed.
    What the listing gave is what a stat of each name asks of another mount (but atime: the
    kernel asks again for that of a folder it has read)."""
    store, config = store_and_config
    projects = [f"project-{number:03}" for number in range(300)]
    for project in projects:
        store.add(f"{project}-1.0.tar.gz", b"x" * 1234)
    store.add("project-000-2.0.tar.gz", b"y" * 567)
    files = ["project-000/project-000-1.0.tar.gz", "project-000/project-000-2.0.tar.gz"]

    def shown(mountpoint: Path) -> list[str]:
        return subprocess.run(
            ["stat", "-c", "%F %s %a %u %g %Y %Z",
             *(mountpoint / name for name in [*projects, *files])],
            capture_output=True, text=True, timeout=20, check=True).stdout.splitlines()

    mountpoint = mounts.mount(config())
    assert sorted(os.listdir(mountpoint)) == projects
    assert sorted(os.listdir(mountpoint / "project-000")) == [Path(name).name for name in files]
    [pid_file] = mounts.state.glob("pkgfs/*.pid")
    daemon = int(pid_file.read_text())
    os.kill(daemon, signal.SIGSTOP)
    try:
        listed = shown(mountpoint)
    finally:
        os.kill(daemon, signal.SIGCONT)
    assert [line.split()[:2] for line in listed] == (
        [["directory", "4096"]] * len(projects) + [["regular", "file"]] * 2)
    assert [line.split()[2] for line in listed[-2:]] == ["1234", "567"]
    assert shown(mounts.mount(config(), name="looked-up")) == listed


def test_a_folder_read_while_it_changes_gives_each_name_once(store_and_config, mounts):
    """A folder read in many parts (300 projects: a dozen reads of the daemon) while a
    project that sorts first is made: every name there all along comes once."""
    store, config = store_and_config
    projects = [f"project-{number:03}" for number in range(300)]
    for project in projects:
        store.add(f"{project}-1.0.tar.gz", b"x")
    mountpoint = mounts.mount(config())
    entries = read_folder(mountpoint)
    names = [entry.d_name.decode() for entry in itertools.islice(entries, 50)]
    (mountpoint / "a-new-project").mkdir()
    names += [entry.d_name.decode() for entry in entries]
    assert sorted(name for name in names if name not in (".", "..", "a-new-project")) == projects
    assert "a-new-project" in os.listdir(mountpoint)


def test_ls_shows_projects_and_their_files(store_and_config, mounts):
    store, config = store_and_config
    store.add(WHEEL, payload("w", 1000), summary="hello wörld")
    store.add(SDIST, payload("s", 2000))
    store.add(OTHER, payload("o", 3000))
    mountpoint = mounts.mount(config())

    assert sorted(os.listdir(mountpoint)) == ["my-pkg", "other-project"]
    assert sorted(os.listdir(mountpoint / "my-pkg")) == [WHEEL, SDIST]
    assert os.listdir(mountpoint / "other-project") == [OTHER]
    listing = subprocess.run(["ls", "-l", mountpoint / "my-pkg"], capture_output=True, text=True,
                             check=True).stdout
    assert " 1000 " in listing and WHEEL in listing
    assert " 2000 " in listing and SDIST in listing


def test_sizes_mtimes_and_bytes_are_the_stored_ones(store_and_config, mounts):
    store, config = store_and_config
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.add(WHEEL, data)
    mountpoint = mounts.mount(config())
    path = mountpoint / "my-pkg" / WHEEL

    assert path.stat().st_size == len(data)
    assert path.stat().st_mtime > 0
    assert path.read_bytes() == data
    with open(path, "rb") as package:  # a reader that seeks, as unzip does
        package.seek(len(data) - 100)
        assert package.read() == data[-100:]
        package.seek(5)
        assert package.read(10) == data[5:15]


def test_cp_copies_the_exact_file(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    data = os.urandom(700_001)
    store.add(WHEEL, data)
    mountpoint = mounts.mount(config())

    subprocess.run(["cp", mountpoint / "my-pkg" / WHEEL, tmp_path / "copy.whl"], check=True)
    assert (tmp_path / "copy.whl").read_bytes() == data


def test_storage_internals_are_never_shown(store_and_config, mounts):
    store, config = store_and_config
    store.add(WHEEL, b"wheel")
    store.add(SDIST, b"no metadata", **({"meta": None} if hasattr(store, "directory") else {}))
    if hasattr(store, "directory"):  # file store
        store.add("broken-1.0.tar.gz", b"x", meta="malformed")
        store.add_raw("my-pkg/1.0/.my_pkg-1.0.tar.gz.3f2a")  # pypicloud's temporary names
        store.add_raw("my-pkg/1.0/.metadata.77ab")
        store.add_raw("my-pkg/1.0/notes.txt")
        store.add_raw("my-pkg/README.md")
        store.add_raw("stray-file.txt")
        store.add_raw("bad name/1.0/bad_name-1.0.tar.gz")
        os.symlink("/etc/passwd", os.path.join(store.directory, "my-pkg/1.0/my_pkg-9.0.tar.gz"))
    else:
        store.add("broken-1.0.tar.gz", b"x", with_name=False)  # written by an older tool
        store.add_raw("packages/abcd/my-pkg/notes.txt")
        store.add_raw("packages/my-pkg/my_pkg-2.0.tar.gz")  # no hash folder
        store.add_raw("packages/zz/my-pkg/my_pkg-3.0.tar.gz")  # not a hash
        store.add_raw("packages/abcd/my-pkg/extra/my_pkg-4.0.tar.gz")
        store.add_raw("elsewhere/abcd/my-pkg/my_pkg-5.0.tar.gz")  # outside the prefix
        store.add_raw("packages/abcd/my-pkg/")
    mountpoint = mounts.mount(config())

    assert sorted(os.listdir(mountpoint)) == ["broken", "my-pkg"]
    assert sorted(os.listdir(mountpoint / "my-pkg")) == [WHEEL, SDIST]
    assert os.listdir(mountpoint / "broken") == ["broken-1.0.tar.gz"]
    assert (mountpoint / "my-pkg" / SDIST).read_bytes() == b"no metadata"
    for hidden in ("1.0", f"{SDIST}.meta", "notes.txt", "abcd", "packages"):
        assert not (mountpoint / "my-pkg" / hidden).exists()
        assert not (mountpoint / hidden).exists()


def test_missing_paths_are_enoent(store_and_config, mounts):
    store, config = store_and_config
    store.add(WHEEL, b"wheel")
    mountpoint = mounts.mount(config())

    for missing in ("nothing", "my-pkg/nothing.whl", "my-pkg/1.0", "my-pkg/.meta"):
        with pytest.raises(FileNotFoundError):
            os.stat(mountpoint / missing)
    with pytest.raises(NotADirectoryError):
        os.stat(mountpoint / "my-pkg" / WHEEL / "below")


@pytest.mark.parametrize("prefix, prepend_hash", [("", "true"), ("", "false"),
                                                  ("packages/", "false"), ("a/b/", "true")])
def test_s3_layouts(s3_client, moto_server, mounts, prefix, prepend_hash):
    from stores import S3Store

    store = S3Store(s3_client, "pkgfs-test", prefix=prefix, prepend_hash=prepend_hash == "true")
    store.add(WHEEL, b"wheel bytes")
    store.add(OTHER, b"other bytes")
    mountpoint = mounts.mount(s3_config(moto_server, **{"aws.prefix": prefix,
                                                        "aws.prepend_hash": prepend_hash}))

    assert sorted(os.listdir(mountpoint)) == ["my-pkg", "other-project"]
    assert (mountpoint / "my-pkg" / WHEEL).read_bytes() == b"wheel bytes"
    assert (mountpoint / "other-project" / OTHER).read_bytes() == b"other bytes"


def test_pypicloud_app_main_ini_mounts_unchanged(file_store, mounts):
    file_store.add(WHEEL, b"wheel")
    config = ("[app:main]\nuse = egg:pypicloud\npypi.default_read = everyone\n"
              f"pypi.storage = file\nstorage.dir = {file_store.directory}\n"
              "[server:main]\nuse = egg:waitress#main\nport = 6543\n")
    mountpoint = mounts.mount(config)
    # No pkgfs keys: the defaults, so the index pages are there too (found, not listed).
    assert sorted(os.listdir(mountpoint)) == ["my-pkg"]
    assert sorted(os.listdir(mountpoint / "my-pkg")) == [WHEEL]
    assert WHEEL in (mountpoint / "my-pkg" / "index.html").read_text()


def test_listings_are_cached_for_cache_ttl(file_store, mounts):
    file_store.add(WHEEL, b"wheel")
    mountpoint = mounts.mount(file_config(file_store, **{"pkgfs.cache_ttl": 3600}))
    assert os.listdir(mountpoint) == ["my-pkg"]

    file_store.add(OTHER, b"other")  # by another writer, behind the mount's back
    assert os.listdir(mountpoint) == ["my-pkg"]


def test_a_new_listing_after_cache_ttl(file_store, mounts):
    file_store.add(WHEEL, b"wheel")
    mountpoint = mounts.mount(file_config(file_store, **{"pkgfs.cache_ttl": 0}))
    assert os.listdir(mountpoint) == ["my-pkg"]

    file_store.add(OTHER, b"other")
    assert sorted(os.listdir(mountpoint)) == ["my-pkg", "other-project"]


def test_default_store_needs_no_config(tmp_path, mounts):
    data_home = tmp_path / "data"
    mounts.env["XDG_DATA_HOME"] = str(data_home)
    mountpoint = mounts.mount(None)
    assert os.listdir(mountpoint) == []
    assert json.loads((mountpoint / "index.json").read_text())["projects"] == []  # an empty index
    assert (data_home / "pkgfs" / "store").is_dir()


def test_python_m_pkgfs_and_the_pkgfs_script_are_the_same():
    import shutil
    import sys

    script = shutil.which("pkgfs", path=os.path.dirname(sys.executable))
    assert script, "the pkgfs script is not installed beside this python"
    by_script = subprocess.run([script, "--help"], capture_output=True, text=True)
    by_module = subprocess.run([sys.executable, "-m", "pkgfs", "--help"], capture_output=True,
                               text=True)
    assert by_script.returncode == by_module.returncode == 0
    assert by_script.stdout == by_module.stdout


def test_a_reader_never_mixes_two_versions_of_an_s3_object(s3_store, moto_server, mounts):
    # Bigger than what a first read fetches whole, so that a later read asks S3 again.
    first, second = os.urandom(8 << 20), os.urandom(8 << 20)
    s3_store.add(WHEEL, first)
    mountpoint = mounts.mount(s3_config(moto_server, **{"pkgfs.cache_ttl": 3600}))

    with open(mountpoint / "my-pkg" / WHEEL, "rb", buffering=0) as package:
        assert package.read(65536) == first[:65536]
        s3_store.add(WHEEL, second)  # replaced behind the mount's back
        with pytest.raises(OSError) as raised:
            package.seek(6 << 20)
            package.read(65536)
    assert raised.value.strerror == "Input/output error"
    assert "changed in the store while being read" in mounts.logs()
