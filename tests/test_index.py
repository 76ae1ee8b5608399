"""The mount as a package index: its files, and pip installing through real web servers."""

import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile

import pytest

from conftest import file_config, s3_config
from stores import wheel
from webservers import fresh_venv, nginx, pip_install, python_http_server

WHEEL = "my_pkg-1.0-py3-none-any.whl"
INDEX = {"pkgfs.index": "true"}


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
    mountpoint = mounts.mount(config(**INDEX))

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


def test_generated_files_have_exact_sizes_and_fresh_mtimes(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add("old-1.0.tar.gz", b"old")
    (tmp_path / WHEEL).write_bytes(wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(config(**INDEX))
    index = mountpoint / "index.html"
    before = index.stat()
    assert before.st_size == len(index.read_bytes())

    os.utime(tmp_path / WHEEL, (1, 1))  # an old file; the page still changes now
    subprocess.run(["cp", tmp_path / WHEEL, mountpoint], check=True)
    after = index.stat()
    assert after.st_size == len(index.read_bytes()) > before.st_size
    assert after.st_mtime > before.st_mtime
    with open(index, "rb") as page:  # byte ranges read exactly
        page.seek(10)
        assert page.read(50) == index.read_bytes()[10:60]


def test_generated_files_are_never_stored_or_replaced(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    store.add(WHEEL, wheel("my-pkg", "1.0"))
    (tmp_path / "index.html").write_text("<html>mine</html>")
    mountpoint = mounts.mount(config(**INDEX))
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


def test_a_missing_hash_is_computed_once_and_recorded(store_and_config, mounts, tmp_path):
    store, config = store_and_config
    data = b"an sdist stored by an old tool"
    if hasattr(store, "directory"):
        store.add("old_tool-1.0.tar.gz", data, meta=None)
    else:
        store.add_raw(store.key("old_tool-1.0.tar.gz"), data)
    mountpoint = mounts.mount(config(**INDEX), name="first")
    digest = hashlib.sha256(data).hexdigest()

    assert f"#sha256={digest}" in (mountpoint / "old-tool" / "index.html").read_text()
    stored_bytes, metadata = store.stored("old_tool-1.0.tar.gz")
    assert stored_bytes == data
    assert digest in metadata.values()
    assert "computed and stored the sha256" in mounts.logs()

    # Another mount, with a cache of its own, finds it in the store.
    second = mounts.mount(config(**INDEX, **{"pkgfs.cache_dir": tmp_path / "other-cache"}),
                          name="second")
    before = mounts.logs().count("computed and stored the sha256")
    assert f"#sha256={digest}" in (second / "old-tool" / "index.html").read_text()
    assert mounts.logs().count("computed and stored the sha256") == before


def test_a_wheel_copied_in_is_indexed_without_reading_it_back(s3_store, moto_server, mounts,
                                                              tmp_path):
    """Its page and .metadata come from what the copy wrote: no request to S3 at all."""
    data = wheel("my-pkg", "1.0", requires_python=">=3.9")
    source = tmp_path / WHEEL
    source.write_bytes(data)
    mountpoint = mounts.mount(s3_config(moto_server, **INDEX, **{"pkgfs.cache_ttl": 3600}))
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


def test_presigned_links_go_straight_to_s3(s3_store, moto_server, mounts):
    data = wheel("my-pkg", "1.0")
    s3_store.add(WHEEL, data)
    mountpoint = mounts.mount(s3_config(moto_server, **INDEX, **{"pkgfs.presigned_urls": "true",
                                                                 "aws.expire_after": "3600"}))

    href = links((mountpoint / "my-pkg" / "index.html").read_text())[WHEEL]["href"]
    url, _, fragment = href.partition("#")
    assert url.startswith(f"{moto_server.endpoint}/pkgfs-test/packages/")
    assert "Expires=" in url or "X-Amz-Expires=3600" in url
    assert fragment == f"sha256={hashlib.sha256(data).hexdigest()}"
    with urllib.request.urlopen(url) as response:
        assert response.read() == data
    assert "testing-secret" not in (mountpoint / "my-pkg" / "index.html").read_text()


def publish_projects(tmp_path, mountpoint):
    """Copy in, as a user would: an app that needs lib, and lib in two versions."""
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "app-1.0-py3-none-any.whl").write_bytes(
        wheel("app", "1.0", requires=("lib",), requires_python=">=3.8"))
    (dist / "lib-1.0-py3-none-any.whl").write_bytes(wheel("lib", "1.0", requires_python=">=3"))
    (dist / "lib-2.0-py3-none-any.whl").write_bytes(wheel("lib", "2.0", requires_python=">=4"))
    subprocess.run(["cp", *sorted(dist.iterdir()), mountpoint], check=True)


def installed_versions(python) -> dict[str, str]:
    listing = subprocess.run([str(python), "-m", "pip", "list", "--format=json"],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    return {package["name"]: package["version"] for package in json.loads(listing.stdout)}




@pytest.mark.parametrize("server", ["http.server", "nginx"])
def test_pip_installs_through_a_web_server(store_and_config, mounts, tmp_path, server,
                                           public_dir):
    store, config = store_and_config
    mountpoint = mounts.mount(config(**INDEX), "--allow-other", parent=public_dir)
    publish_projects(tmp_path, mountpoint)
    start = python_http_server if server == "http.server" else nginx
    web = start(mountpoint, tmp_path)
    try:
        python = fresh_venv(tmp_path / "venv")
        result = pip_install(python, web.url, "app")
        assert result.returncode == 0, result.stdout + result.stderr
        versions = installed_versions(python)
        assert (versions["app"], versions["lib"]) == ("1.0", "1.0")  # 2.0 needs Python 4
        fetched = web.requests()
        assert "/app/app-1.0-py3-none-any.whl.metadata" in fetched  # PEP 658
        assert "/lib/lib-2.0-py3-none-any.whl" not in fetched
    finally:
        web.stop()


def test_uv_installs_through_nginx(s3_store, moto_server, mounts, tmp_path, public_dir):
    uv = shutil.which("uv", path=os.path.dirname(sys.executable))
    assert uv, "uv is a test dependency: ./dev test installs it"
    mountpoint = mounts.mount(s3_config(moto_server, **INDEX), "--allow-other", parent=public_dir)
    publish_projects(tmp_path, mountpoint)
    web = nginx(mountpoint, tmp_path)
    try:
        python = fresh_venv(tmp_path / "venv")
        result = subprocess.run(
            [uv, "pip", "install", "--python", str(python), "--index-url", web.url,
             "--no-cache", "app"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, "UV_NO_CONFIG": "1"}, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        versions = installed_versions(python)
        assert (versions["app"], versions["lib"]) == ("1.0", "1.0")
        assert "/app/app-1.0-py3-none-any.whl.metadata" in web.requests()
    finally:
        web.stop()


def test_a_tampered_file_fails_the_install(file_store, mounts, tmp_path):
    os.makedirs(file_store.directory)
    mountpoint = mounts.mount(file_config(file_store, **INDEX, **{"pkgfs.cache_ttl": 0}))
    publish_projects(tmp_path, mountpoint)
    stored = os.path.join(file_store.directory, "lib", "1.0", "lib-1.0-py3-none-any.whl")
    tampered = wheel("lib", "1.0", requires_python=">=3", padding=64)  # same name, other bytes
    with open(stored, "wb") as package:
        package.write(tampered)
    web = python_http_server(mountpoint, tmp_path)
    try:
        python = fresh_venv(tmp_path / "venv")
        result = pip_install(python, web.url, "app")
    finally:
        web.stop()
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert "lib" not in installed_versions(python)


def test_nginx_serves_byte_ranges_and_json(file_store, mounts, tmp_path, public_dir):
    os.makedirs(file_store.directory)
    data = wheel("my-pkg", "1.0", padding=300_000)
    file_store.add(WHEEL, data)
    mountpoint = mounts.mount(file_config(file_store, **INDEX), "--allow-other",
                              parent=public_dir)
    web = nginx(mountpoint, tmp_path)
    try:
        request = urllib.request.Request(f"{web.url}my-pkg/{WHEEL}",
                                         headers={"Range": "bytes=1000-200999"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 206
            assert response.read() == data[1000:201000]
        request = urllib.request.Request(f"{web.url}my-pkg/", headers={
            "Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request) as response:
            assert response.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
            assert json.loads(response.read())["name"] == "my-pkg"
        with urllib.request.urlopen(f"{web.url}my-pkg/") as response:
            assert response.headers["Content-Type"].startswith("text/html")
            assert WHEEL in response.read().decode()
    finally:
        web.stop()


def test_the_root_index_follows_the_store_after_cache_ttl(file_store, mounts):
    file_store.add(WHEEL, wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(file_config(file_store, **INDEX, **{"pkgfs.cache_ttl": 0}))
    assert list(links((mountpoint / "index.html").read_text())) == ["my-pkg"]

    file_store.add("other-1.0.tar.gz", b"other")  # by another writer
    assert list(links((mountpoint / "index.html").read_text())) == ["my-pkg", "other"]
