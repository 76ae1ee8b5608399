"""The mount as a package index: its files, and pip installing through real web servers."""

import hashlib
import html
import io
import json
import os
import re
import subprocess
import time
import zipfile

from conftest import file_config, s3_config
from stores import wheel

WHEEL = "my_pkg-1.0-py3-none-any.whl"
PAGES = ("index.html", "index.json")


def links(page: str) -> dict[str, dict[str, str]]:
    """The attributes of each link of an HTML page, by link text."""
    found = {}
    for attributes, text in re.findall(r"<a ([^>]*)>([^<]*)</a>", page):
        found[html.unescape(text)] = {name: html.unescape(value) for name, value in
                                      re.findall(r'([\w-]+)="([^"]*)"', attributes)}
    return found


def core_metadata_of(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(next(name for name in archive.namelist()
                                 if name.endswith(".dist-info/METADATA")))


def test_index_pages_describe_every_file(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    data = wheel("my-pkg", "1.0", requires_python=">=3.8")
    local = wheel("my-pkg", "1.0+local.1")
    store.add(WHEEL, data, requires_python=">=3.8")
    store.add("my_pkg-1.0+local.1-py3-none-any.whl", local)
    store.add("my_pkg-0.9.tar.gz", b"an sdist")
    store.add("other-2.0.tar.gz", b"other")
    mountpoint = mounts.mount(config())

    root = (mountpoint / "index.html").read_text()
    assert list(links(root)) == ["my-pkg", "other"]
    assert links(root)["my-pkg"]["href"] == "my-pkg/"
    assert json.loads((mountpoint / "index.json").read_text()) == {
        "meta": {"api-version": "1.1"}, "projects": [{"name": "my-pkg"}, {"name": "other"}]}

    page = (mountpoint / "my-pkg" / "index.html").read_text()
    assert '<meta name="pypi:repository-version" content="1.1">' in page
    assert "data-requires-python=\"&gt;=3.8\"" in page
    files = links(page)
    assert list(files) == ["my_pkg-0.9.tar.gz", "my_pkg-1.0+local.1-py3-none-any.whl", WHEEL]
    assert files[WHEEL]["href"] == f"{WHEEL}#sha256={hashlib.sha256(data).hexdigest()}"
    assert files["my_pkg-1.0+local.1-py3-none-any.whl"]["href"].startswith(
        "my_pkg-1.0%2Blocal.1-py3-none-any.whl#sha256=")
    core = core_metadata_of(data)
    assert files[WHEEL]["data-core-metadata"] == f"sha256={hashlib.sha256(core).hexdigest()}"
    assert files[WHEEL]["data-dist-info-metadata"] == files[WHEEL]["data-core-metadata"]
    assert files[WHEEL]["data-requires-python"] == ">=3.8"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", files[WHEEL]["data-upload-time"])
    assert "data-core-metadata" not in files["my_pkg-0.9.tar.gz"]
    assert (mountpoint / "my-pkg" / f"{WHEEL}.metadata").read_bytes() == core

    document = json.loads((mountpoint / "my-pkg" / "index.json").read_text())
    assert document["name"] == "my-pkg"
    assert document["versions"] == ["0.9", "1.0", "1.0+local.1"]
    entry = next(file for file in document["files"] if file["filename"] == WHEEL)
    assert entry["hashes"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert entry["requires-python"] == ">=3.8"
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(core).hexdigest()}
    assert entry["size"] == len(data)
    assert entry["url"] == WHEEL
    assert "dist-info-metadata" not in entry  # PEP 714: pip 22.3 to 23.1 crash on it


def test_a_page_is_a_link_to_a_version_that_never_changes(store_and_config, mounts, tmp_path):
    """index.json links to .index.<digest>.json beside it: a copy makes a new version and
    moves the link; the version read before stays as it was (a web server holding it open
    or following the link just before the change serves it whole)."""
    store, config = store_and_config
    store.add(WHEEL, wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(config())
    link = mountpoint / "my-pkg" / "index.json"
    before = os.readlink(link)
    assert re.fullmatch(r"\.index\.[0-9a-f]{20}\.json", before)
    old_page = link.read_bytes()
    (tmp_path / "my_pkg-1.1.tar.gz").write_bytes(b"an sdist")
    subprocess.run(["cp", tmp_path / "my_pkg-1.1.tar.gz", mountpoint / "my-pkg"], check=True)

    after = os.readlink(link)
    assert after != before and "my_pkg-1.1.tar.gz" in link.read_text()
    assert (mountpoint / "my-pkg" / before).read_bytes() == old_page
    assert (mountpoint / "my-pkg" / before).stat().st_size == len(old_page)
    assert before not in os.listdir(mountpoint / "my-pkg")  # found by name, never listed
    result = subprocess.run(["cp", tmp_path / "my_pkg-1.1.tar.gz", mountpoint / "my-pkg" / after],
                            capture_output=True, text=True)
    assert "Operation not permitted" in result.stderr


def test_generated_files_are_never_stored_or_replaced(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add(WHEEL, wheel("my-pkg", "1.0"))
    (tmp_path / "index.html").write_text("<html>mine</html>")
    mountpoint = mounts.mount(config())
    before = store.contents()
    page = (mountpoint / "my-pkg" / "index.html").read_bytes()

    for command in (["cp", tmp_path / "index.html", mountpoint / "my-pkg"],
                    ["cp", tmp_path / "index.html", mountpoint / "index.json"],
                    ["rm", mountpoint / "my-pkg" / "index.html"],
                    ["rm", mountpoint / "my-pkg" / f"{WHEEL}.metadata"],
                    ["mv", mountpoint / "my-pkg" / "index.json", mountpoint / "my-pkg" / "x.json"]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode != 0, command
        assert "Operation not permitted" in result.stderr, command
    assert (mountpoint / "my-pkg" / "index.html").read_bytes() == page
    assert store.contents() == before


def test_a_wheel_copied_in_is_indexed_without_reading_it_back(s3_store, moto_server, mounts,
                                                              tmp_path):
    """Its page and .metadata come from what the copy wrote: no request to S3 at all."""
    data = wheel("my-pkg", "1.0", requires_python=">=3.9")
    source = tmp_path / WHEEL
    source.write_bytes(data)
    mountpoint = mounts.mount(s3_config(moto_server, **{"pkgfs.cache_ttl": 3600}))
    subprocess.run(["cp", source, mountpoint], check=True)

    before = len(moto_server.requests())
    page = json.loads((mountpoint / "my-pkg" / "index.json").read_text())
    metadata = (mountpoint / "my-pkg" / f"{WHEEL}.metadata").read_bytes()
    assert moto_server.requests()[before:] == []
    assert metadata == core_metadata_of(data)
    [entry] = page["files"]
    assert entry["hashes"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(metadata).hexdigest()}
    assert entry["requires-python"] == ">=3.9"


def test_index_off_leaves_the_plain_tree(file_store, mounts):
    file_store.add(WHEEL, wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(file_config(file_store, **{"pkgfs.index": "false"}))
    assert os.listdir(mountpoint) == ["my-pkg"]
    assert os.listdir(mountpoint / "my-pkg") == [WHEEL]




def test_the_root_index_follows_the_store_after_cache_ttl(file_store, mounts):
    file_store.add(WHEEL, wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(file_config(file_store, **{"pkgfs.cache_ttl": 0}))
    assert list(links((mountpoint / "index.html").read_text())) == ["my-pkg"]

    file_store.add("other-1.0.tar.gz", b"other")  # by another writer
    assert list(links((mountpoint / "index.html").read_text())) == ["my-pkg", "other"]


def served(page) -> tuple[int, bytes]:
    """What a web server sends of a file: open, the size fstat gives, then the reads."""
    with open(page, "rb") as opened:
        return os.fstat(opened.fileno()).st_size, opened.read()


def assert_whole(page) -> bytes:
    """The size ls -l and stat show, the size a web server sends and what it reads agree."""
    listed = subprocess.run(["stat", "-L", "-c", "%s", page], capture_output=True, text=True)
    size, content = served(page)
    assert int(listed.stdout) == size == len(content), page
    return content


def test_pages_are_found_by_name_and_never_listed(store_and_config, mounts, tmp_path):
    """Listing never makes a page, and every name a listing gives can be stat'ed."""
    store, config = store_and_config
    store.add(WHEEL, wheel("my-pkg", "1.0"))
    store.add("my_pkg-0.9.tar.gz", b"an sdist")
    mountpoint = mounts.mount(config())

    assert os.listdir(mountpoint) == ["my-pkg"]
    assert sorted(os.listdir(mountpoint / "my-pkg")) == ["my_pkg-0.9.tar.gz", WHEEL]
    for path in ("index.html", "index.json", "my-pkg/index.html", "my-pkg/index.json",
                 f"my-pkg/{WHEEL}.metadata"):
        assert (mountpoint / path).stat().st_size == len((mountpoint / path).read_bytes()) > 0
    listing = subprocess.run(["ls", "-lR", mountpoint], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", mountpoint, copy], check=True)
    assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*")) == [
        "my-pkg", "my-pkg/my_pkg-0.9.tar.gz", f"my-pkg/{WHEEL}"]


def test_pages_are_whole_and_fresh_after_each_copy(store_and_config, mounts, tmp_path):
    """The kernel keeps names and sizes for cache_ttl: a page read after a copy must still be
    the whole new page, with a new size and an mtime a second later."""
    store, config = store_and_config
    store.add("my_pkg-0.1.tar.gz", b"first")
    mountpoint = mounts.mount(config(**{"pkgfs.cache_ttl": 3600}))
    project = mountpoint / "my-pkg"
    pages = (project / "index.html", project / "index.json", mountpoint / "index.json")
    for number in range(1, 5):
        for page in pages:
            page.read_bytes()
        # Attributes given, and no read since: the kernel would keep these sizes.
        before = {page: page.stat() for page in pages}
        name = f"my_pkg-1.{number}.tar.gz"
        (tmp_path / name).write_bytes(b"x" * number)
        target = project if number % 2 else mountpoint  # a project folder, or the root
        subprocess.run(["cp", tmp_path / name, target], check=True)

        for page in pages:
            assert_whole(page)
        for page in pages[:2]:
            after = page.stat()
            assert after.st_size > before[page].st_size
            assert int(after.st_mtime) >= int(before[page].st_mtime) + 1
        document = json.loads((project / "index.json").read_bytes())
        assert name in [entry["filename"] for entry in document["files"]]
        html_page = (project / "index.html").read_text()
        assert html_page.endswith("</html>\n") and f">{name}</a>" in html_page

    (tmp_path / "other-1.0.tar.gz").write_bytes(b"other")
    subprocess.run(["cp", tmp_path / "other-1.0.tar.gz", mountpoint], check=True)
    root = json.loads((mountpoint / "index.json").read_bytes())
    assert [project["name"] for project in root["projects"]] == ["my-pkg", "other"]


def test_pages_follow_another_mounts_copies_within_cache_ttl(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add("my_pkg-0.1.tar.gz", b"first")
    reader = mounts.mount(config(**{"pkgfs.cache_ttl": 2}), name="reader")
    writer = mounts.mount(config(), name="writer")
    page = reader / "my-pkg" / "index.json"
    assert len(json.loads(page.read_bytes())["files"]) == 1

    (tmp_path / "my_pkg-2.0.tar.gz").write_bytes(b"a longer second file")
    subprocess.run(["cp", tmp_path / "my_pkg-2.0.tar.gz", writer / "my-pkg"], check=True)
    deadline = time.monotonic() + 2 * 2 + 10  # cache_ttl, a listing, and a slow machine
    while True:
        size, content = served(page)  # (a stat before an open may see the page before)
        assert size == len(content)
        document = json.loads(content)  # whole at every read, never cut
        if len(document["files"]) == 2:
            break
        assert time.monotonic() < deadline, "the other mount's copy never showed"
        time.sleep(0.2)
    assert json.loads(assert_whole(page)) == document


def test_a_missing_hash_is_worked_out_once_and_never_written(store_and_config, mounts, tmp_path):
    """A file stored by an old tool, without a sha256: hashed once, the hash kept in the
    local cache; the store, and the file's upload time, stay exactly as they were."""
    store, config = store_and_config
    name = "old_tool-1.0-py3-none-any.whl"
    data = wheel("old-tool", "1.0", padding=200_000)
    if hasattr(store, "directory"):
        store.add(name, data, meta=None)
    else:
        store.add_raw(store.key(name), data)
    before = store.state()
    digest = hashlib.sha256(data).hexdigest()

    for run in ("first", "again"):  # the second mount shares the first one's cache
        mountpoint = mounts.mount(config(), "--read-only", name=run)
        page = links((mountpoint / "old-tool" / "index.html").read_text())[name]
        assert page["href"] == f"{name}#sha256={digest}"
        core = core_metadata_of(data)
        assert page["data-core-metadata"] == f"sha256={hashlib.sha256(core).hexdigest()}"
        assert (mountpoint / "old-tool" / f"{name}.metadata").read_bytes() == core
        stored_at = os.stat(mountpoint / "old-tool" / name).st_mtime
        assert page["data-upload-time"] == time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(stored_at)) + page["data-upload-time"][19:]
        mounts.unmount(mountpoint)
        assert store.state() == before
    assert mounts.logs().count("stored without a sha256") == 1


def test_non_normalized_project_names_find_their_project(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add("Flask-1.0.tar.gz", b"flask")
    store.add("zope.interface-5.0.tar.gz", b"zope")
    store.add("ruamel_yaml-0.17.tar.gz", b"ruamel")
    mountpoint = mounts.mount(config())

    assert sorted(os.listdir(mountpoint)) == ["flask", "ruamel-yaml", "zope-interface"]
    for alias, project in (("Flask", "flask"), ("zope.interface", "zope-interface"),
                           ("ruamel_yaml", "ruamel-yaml"), ("RUAMEL.YAML", "ruamel-yaml")):
        assert os.listdir(mountpoint / alias) == os.listdir(mountpoint / project)
        for page in PAGES:
            assert (mountpoint / alias / page).read_bytes() == \
                (mountpoint / project / page).read_bytes()

    for folder in ("Flask", "flask"):
        (mountpoint / folder / "index.json").stat()
    (tmp_path / "Flask-2.0.tar.gz").write_bytes(b"flask 2")
    subprocess.run(["cp", tmp_path / "Flask-2.0.tar.gz", mountpoint / "Flask"], check=True)
    assert store.stored("Flask-2.0.tar.gz")[0] == b"flask 2"
    assert sorted(os.listdir(mountpoint)) == ["flask", "ruamel-yaml", "zope-interface"]
    for folder in ("Flask", "flask"):
        document = json.loads(assert_whole(mountpoint / folder / "index.json"))
        assert [entry["filename"] for entry in document["files"]] == [
            "Flask-1.0.tar.gz", "Flask-2.0.tar.gz"]
