"""Writing through the mount with the tools users copy with; the store as pypicloud writes it."""

import errno
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from harness import staged_files
from conftest import file_config
from stores import sdist, wheel

WHEEL = "my_pkg-1.0-py3-none-any.whl"


def run(*command, check=True):
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          check=check, stdin=subprocess.DEVNULL)


def is_file_store(store) -> bool:
    return hasattr(store, "directory")


def assert_stored_like_pypicloud(store, filename, data, summary="", requires_python=""):
    stored = store.stored(filename)
    assert stored is not None, f"{filename} is not in the store"
    stored_bytes, metadata = stored
    assert stored_bytes == data
    expected = {"hash_sha256": hashlib.sha256(data).hexdigest(),
                "hash_md5": hashlib.md5(data).hexdigest(),
                "summary": summary, "requires_python": requires_python}
    expected = {key: value for key, value in expected.items() if value}
    if not is_file_store(store):
        expected = {key.replace("_", "-"): value for key, value in expected.items()}
        project, version = filename.split("-")[:2]
        expected.update(name=project.replace("_", "-").lower(), version=version.split(".tar")[0])
    assert metadata == expected


@pytest.mark.parametrize("into", ["root", "project folder"])
def test_cp_stores_a_wheel_with_its_metadata(store_and_config, mounts, tmp_path, into):
    store, config = store_and_config
    data = wheel("my-pkg", "1.0", summary="A package", requires_python=">=3.8")
    (tmp_path / WHEEL).write_bytes(data)
    mountpoint = mounts.mount(config())
    if into == "project folder":
        os.mkdir(mountpoint / "my-pkg")

    target = mountpoint if into == "root" else mountpoint / "my-pkg"
    run("cp", tmp_path / WHEEL, target)

    assert os.listdir(mountpoint / "my-pkg") == [WHEEL]
    assert WHEEL not in os.listdir(mountpoint)
    assert (mountpoint / "my-pkg" / WHEEL).read_bytes() == data
    assert_stored_like_pypicloud(store, WHEEL, data, "A package", ">=3.8")


def test_sdist_metadata_comes_from_pkg_info(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    data = sdist("my-pkg", "2.0", summary="Sdist summary", requires_python=">=3.10")
    (tmp_path / "my_pkg-2.0.tar.gz").write_bytes(data)
    mountpoint = mounts.mount(config())

    run("cp", tmp_path / "my_pkg-2.0.tar.gz", mountpoint)
    assert_stored_like_pypicloud(store, "my_pkg-2.0.tar.gz", data, "Sdist summary", ">=3.10")


def test_unreadable_archive_is_stored_without_summary(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    (tmp_path / WHEEL).write_bytes(b"not a zip file")
    mountpoint = mounts.mount(config())

    run("cp", tmp_path / WHEEL, mountpoint)
    assert_stored_like_pypicloud(store, WHEEL, b"not a zip file")
    assert f"{WHEEL}: cannot read its metadata" in mounts.logs()


def test_a_name_that_is_not_a_distribution_is_refused(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    (tmp_path / "README.md").write_text("hello")
    mountpoint = mounts.mount(config())
    before = store.contents()

    result = run("cp", tmp_path / "README.md", mountpoint, check=False)
    assert result.returncode != 0
    assert "Invalid argument" in result.stderr
    assert store.contents() == before
    assert os.listdir(mountpoint) == []
    assert "README.md" in mounts.logs()


def test_a_wheel_in_another_projects_folder_is_refused(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add("other-1.0.tar.gz", b"other")
    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(config())

    result = run("cp", tmp_path / WHEEL, mountpoint / "other", check=False)
    assert "Invalid argument" in result.stderr
    assert os.listdir(mountpoint / "other") == ["other-1.0.tar.gz"]
    assert store.stored(WHEEL) is None


def test_an_existing_file_is_not_replaced(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add(WHEEL, b"first")
    (tmp_path / WHEEL).write_bytes(b"second")
    mountpoint = mounts.mount(config())

    result = run("cp", tmp_path / WHEEL, mountpoint / "my-pkg", check=False)
    assert result.returncode != 0
    assert "File exists" in result.stderr
    assert (mountpoint / "my-pkg" / WHEEL).read_bytes() == b"first"
    assert store.stored(WHEEL)[0] == b"first"


def test_allow_overwrite_replaces(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add(WHEEL, b"first")
    second = wheel("my-pkg", "1.0", summary="second")
    (tmp_path / WHEEL).write_bytes(second)
    mountpoint = mounts.mount(config(**{"pypi.allow_overwrite": "true"}))

    run("cp", tmp_path / WHEEL, mountpoint / "my-pkg")
    assert (mountpoint / "my-pkg" / WHEEL).read_bytes() == second
    assert_stored_like_pypicloud(store, WHEEL, second, "second")


def test_rm_deletes_the_file_and_its_metadata(store_and_config, mounts):
    store, config = store_and_config
    store.add(WHEEL, b"wheel")
    store.add("my_pkg-2.0.tar.gz", b"sdist")
    mountpoint = mounts.mount(config())

    run("rm", mountpoint / "my-pkg" / WHEEL)
    assert os.listdir(mountpoint / "my-pkg") == ["my_pkg-2.0.tar.gz"]
    assert store.stored(WHEEL) is None
    run("rm", mountpoint / "my-pkg" / "my_pkg-2.0.tar.gz")
    assert os.listdir(mountpoint) == []
    # Nothing is left: no .meta and, in a file store, no empty version or project folder.
    assert store.contents() == []


def test_mkdir_and_rmdir_of_projects(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add(WHEEL, b"wheel")
    mountpoint = mounts.mount(config())

    os.mkdir(mountpoint / "new-project")
    assert sorted(os.listdir(mountpoint)) == ["my-pkg", "new-project"]
    assert os.listdir(mountpoint / "new-project") == []
    with pytest.raises(OSError) as raised:
        os.rmdir(mountpoint / "my-pkg")
    assert raised.value.strerror == "Directory not empty"
    with pytest.raises(OSError) as raised:
        os.mkdir(mountpoint / "Not Normalized")
    assert raised.value.strerror == "Invalid argument"
    os.rmdir(mountpoint / "new-project")
    assert os.listdir(mountpoint) == ["my-pkg"]


def test_read_only_refuses_every_write(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add(WHEEL, b"wheel")
    (tmp_path / "other-1.0.tar.gz").write_bytes(b"x")
    mountpoint = mounts.mount(config(), "--read-only")

    for command in (["cp", tmp_path / "other-1.0.tar.gz", mountpoint],
                    ["rm", mountpoint / "my-pkg" / WHEEL],
                    ["mkdir", mountpoint / "new"]):
        result = run(*command, check=False)
        assert "Read-only file system" in result.stderr, command
    assert os.listdir(mountpoint / "my-pkg") == [WHEEL]


def test_rsync_mv_cp_p_install_and_shutil(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    source = tmp_path / "dist"
    source.mkdir()
    files = {f"tool_{number}-1.0-py3-none-any.whl": wheel(f"tool-{number}", "1.0",
                                                          summary=f"tool {number}")
             for number in range(6)}
    for filename, data in files.items():
        (source / filename).write_bytes(data)
    mountpoint = mounts.mount(config())
    names = sorted(files)

    run("rsync", source / names[0], mountpoint)  # hidden temp file, then rename
    run("mv", source / names[1], mountpoint)
    run("cp", "-p", source / names[2], mountpoint)
    run("install", "-m", "644", source / names[3], mountpoint)
    shutil.copy2(source / names[4], mountpoint)
    tree = tmp_path / "tree" / "tool-5"
    tree.mkdir(parents=True)
    shutil.copy(source / names[5], tree)
    shutil.copytree(tree, mountpoint / "tool-5")

    for number, filename in enumerate(names):
        project = f"tool-{number}"
        assert os.listdir(mountpoint / project) == [filename]
        assert (mountpoint / project / filename).read_bytes() == files[filename]
        assert_stored_like_pypicloud(store, filename, files[filename], f"tool {number}")
    assert not (source / names[1]).exists()  # mv moved it
    assert sorted(os.listdir(mountpoint)) == [f"tool-{number}" for number in range(6)]


def test_rsync_of_a_folder(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    source = tmp_path / "dist"
    source.mkdir()
    data = {name: wheel(name.split("-")[0], "1.0") for name in
            ("alpha-1.0-py3-none-any.whl", "beta-1.0-py3-none-any.whl")}
    for name, content in data.items():
        (source / name).write_bytes(content)
    mountpoint = mounts.mount(config())

    run("rsync", "-r", f"{source}/", mountpoint)
    assert sorted(os.listdir(mountpoint)) == ["alpha", "beta"]
    for name, content in data.items():
        assert store.stored(name)[0] == content


def test_staging_is_empty_after_copies(file_store, mounts, tmp_path):
    os.makedirs(file_store.directory)
    staging = tmp_path / "cache" / "staging"
    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(file_config(file_store, **{"pkgfs.cache_dir": tmp_path / "cache"}))

    run("cp", tmp_path / WHEEL, mountpoint)
    run("cp", tmp_path / WHEEL, mountpoint / "not-a-package.txt", check=False)
    assert len(list(staging.iterdir())) == 1 and staged_files(staging) == []
    assert file_store.contents() == ["my-pkg", "my-pkg/1.0", f"my-pkg/1.0/{WHEEL}",
                                     f"my-pkg/1.0/{WHEEL}.meta"]


def test_another_mount_sees_writes_once_its_listing_expires(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add("old-1.0.tar.gz", b"old")
    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0"))
    writer = mounts.mount(config(), name="writer")
    caching = mounts.mount(config(**{"pkgfs.cache_ttl": 3600}), name="caching")
    fresh = mounts.mount(config(**{"pkgfs.cache_ttl": 0}), name="fresh")
    assert os.listdir(caching) == os.listdir(fresh) == ["old"]

    run("cp", tmp_path / WHEEL, writer)
    run("rm", writer / "old" / "old-1.0.tar.gz")
    assert os.listdir(writer) == ["my-pkg"]
    assert os.listdir(fresh) == ["my-pkg"]
    assert os.listdir(caching) == ["old"]  # until its listing is cache_ttl old


def daemon_peak_memory_kib(mounts) -> int:
    pid = int(next(mounts.state.glob("pkgfs/*.pid")).read_text())
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmHWM:")[1].split()[0])


def test_a_2_gb_copy_works_with_bounded_memory(file_store, mounts, tmp_path):
    os.makedirs(file_store.directory)
    source = tmp_path / "huge_pkg-1.0.tar.gz"
    with open(source, "wb") as huge:
        block = os.urandom(1 << 20)
        for _ in range(2048):
            huge.write(block)
    mountpoint = mounts.mount(file_config(file_store))

    run("cp", source, mountpoint)
    assert run("cmp", source, mountpoint / "huge-pkg" / source.name).returncode == 0
    with open(source, "rb") as huge:
        sha256 = hashlib.file_digest(huge, "sha256").hexdigest()
    meta_path = os.path.join(file_store.directory, "huge-pkg", "1.0", source.name + ".meta")
    with open(meta_path) as meta:
        assert json.load(meta)["hash_sha256"] == sha256
    assert daemon_peak_memory_kib(mounts) < 200 * 1024  # staged on disk, never in memory
    source.unlink()


@pytest.mark.parametrize("name", ["bad\x01name-1.0.tar.gz", "tab\tname-1.0.tar.gz",
                                  "x" * 250 + "-1.0.tar.gz"])
def test_names_with_control_characters_or_too_long_are_refused(store_and_config, mounts, name):
    store, config = store_and_config
    mountpoint = mounts.mount(config())
    before = store.contents()

    with pytest.raises(OSError) as raised:
        (mountpoint / name).write_bytes(b"x")
    assert raised.value.errno in (errno.EINVAL, errno.ENAMETOOLONG)
    assert os.listdir(mountpoint) == []
    assert store.contents() == before


def test_extended_attributes_answer_as_a_filesystem_without_them(store_and_config, mounts):
    store, config = store_and_config
    store.add(WHEEL, b"wheel")
    mountpoint = mounts.mount(config())
    path = mountpoint / "my-pkg" / WHEEL

    assert os.listxattr(path) == []
    with pytest.raises(OSError) as raised:
        os.setxattr(path, "user.origin", b"ci")
    assert raised.value.errno == errno.ENOTSUP
    with pytest.raises(OSError) as raised:
        os.getxattr(path, "user.origin")
    assert raised.value.errno in (errno.ENOTSUP, errno.ENODATA)
