"""The tree's rules through the node protocol, in-process (no FUSE): what each path is,
what opening it gives, and when a copy is stored."""

import os

import pytest

from stores import wheel
from pkgfs.catalog import Catalog
from pkgfs.errors import ChangeInPlace, Generated, NotOpenForWriting
from pkgfs.index import open_index
from pkgfs.storage.file import FileStorage
from pkgfs.tree import PackageTree

WHEEL = "my_pkg-1.0-py3-none-any.whl"
WRITER, READER = 1001, 1002  # process ids, as the FUSE layer passes them


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "store").mkdir()
    catalog = Catalog(FileStorage(str(tmp_path / "store")), ttl=60)
    tree = PackageTree(catalog, str(tmp_path / "staging"),
                       index=open_index(catalog, str(tmp_path / "cache")))
    yield tree
    tree.close()


def copy_in(tree, parts: list[str], data: bytes) -> None:
    """What cp does: create, write, close (the writer's own), release."""
    writing = tree.create(parts, writer=WRITER)
    writing.write(data, 0)
    assert writing.closed_by(WRITER)
    writing.release()


def test_a_copy_is_stored_by_its_writers_close_and_never_by_a_reader(tree):
    data = wheel("my-pkg", "1.0")
    writing = tree.create([WHEEL], writer=WRITER)
    writing.write(data[:100], 0)

    staged = tree.node([WHEEL])
    assert staged.attributes().size == 100 and staged.attributes().version is None
    reading = staged.open(writing=False, truncating=False, process=READER)
    assert reading.read(0, 1000) == data[:100]
    with pytest.raises(NotOpenForWriting):
        reading.write(b"x", 0)
    assert not reading.closed_by(READER)  # a reader's close stores nothing
    reading.release()
    assert tree.catalog.storage.find("my-pkg", WHEEL) is None  # nothing stored yet

    writing.write(data[100:], 100)
    assert not writing.closed_by(READER)  # a process that inherited the descriptor
    assert tree.catalog.storage.find("my-pkg", WHEEL) is None
    assert writing.closed_by(WRITER)
    writing.release()

    stored = tree.node(["my-pkg", WHEEL])
    attributes = stored.attributes()
    assert (attributes.size, attributes.folder, attributes.link) == (len(data), False, None)
    handle = stored.open(writing=False, truncating=False, process=READER)
    try:
        assert handle.read(0, len(data) + 10) == data
        assert handle.attributes().version == attributes.version
    finally:
        handle.release()


def test_a_stored_file_is_replaced_whole_or_not_opened_to_write(tree):
    data = wheel("my-pkg", "1.0")
    tree.make_project(["my-pkg"])
    copy_in(tree, ["my-pkg", WHEEL], data)

    stored = tree.node(["my-pkg", WHEEL])
    with pytest.raises(ChangeInPlace):  # >> or O_RDWR
        stored.open(writing=True, truncating=False, process=WRITER)
    assert tree.node(["my-pkg", WHEEL]).attributes().size == len(data)


def test_pages_are_links_to_read_only_versions(tree):
    copy_in(tree, [WHEEL], wheel("my-pkg", "1.0"))

    versions = []
    for parts in (["index.html"], ["my-pkg", "index.json"]):
        link = tree.node(parts).attributes().link
        assert link.startswith(".index.") and link.endswith(parts[-1][5:])
        versions.append(parts[:-1] + [link])
    for parts in (*versions, ["my-pkg", WHEEL + ".metadata"]):
        page = tree.node(parts)
        attributes = page.attributes()
        assert not attributes.writable and attributes.size > 0 and attributes.version
        with pytest.raises(Generated):
            page.open(writing=True, truncating=True, process=WRITER)
        handle = page.open(writing=False, truncating=False, process=READER)
        assert len(handle.read(0, 1 << 20)) == attributes.size
        handle.release()


def test_folders_are_folders(tree):
    copy_in(tree, [WHEEL], wheel("my-pkg", "1.0"))
    for parts in ([], ["my-pkg"], ["My_Pkg"]):
        assert tree.node(parts).attributes().folder
        with pytest.raises(IsADirectoryError):
            tree.node(parts).open(writing=False, truncating=False, process=READER)


def test_a_project_folder_has_the_time_of_its_newest_file(tree, tmp_path):
    for version, mtime in (("1.0", 1_700_000_000), ("2.0", 1_800_000_000), ("1.5", 1_750_000_000)):
        path = tmp_path / "store" / "my-pkg" / version / f"my_pkg-{version}.tar.gz"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    folder = tree.node(["my-pkg"]).attributes()
    assert folder.folder and folder.mtime == 1_800_000_000
