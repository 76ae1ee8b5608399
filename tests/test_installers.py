"""pip and uv install through the mount, served by real web servers, as users run them.

Each pip is the release a supported system ships or the newest, in a venv of
its own: Debian 12's python3-pip is 23.0.1, and pip 22.3 to 23.1 crashed on
the legacy key PEP 714 took out of JSON.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import file_config, s3_config
from stores import wheel
from webservers import fresh_venv, installer_env, nginx, pip_install, python_http_server, \
    uv_install

# Debian 12's pip (23.0.1) and Debian 13's (25.1.1), the releases around the first, the
# newest, and uv.
INSTALLERS = ["pip 22.3.1", "pip 23.0.1", "pip 23.1.2", "pip 23.2.1", "pip 25.1.1",
              "pip newest", "uv"]
# Releases that do not run on newer Pythons (pkgutil.ImpImporter went in 3.12): they are
# tested where they are a system's pip, on Debian 12's Python 3.11.
RUNS_BEFORE_PYTHON = {"pip 22.3.1": (3, 12), "pip 23.0.1": (3, 12)}
# Those that read core metadata from JSON (PEP 714's key) and fetch .metadata files.
READ_CORE_METADATA = {"pip newest", "uv"}


@pytest.fixture(scope="session")
def pip_python(tmp_path_factory):
    """The python of a venv holding a given pip release, made once a session."""
    made = {}

    def python_with(release: str):
        if release not in made:
            python = fresh_venv(tmp_path_factory.mktemp(f"pip-{release}") / "venv")
            wanted = "pip" if release == "newest" else f"pip=={release}"
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", wanted],
                           env=installer_env(), check=True, timeout=300,
                           stdin=subprocess.DEVNULL)
            made[release] = python
        return made[release]
    return python_with


def install(installer: str, pip_python, index_url: str, target) -> subprocess.CompletedProcess:
    """Install app (which needs lib) from the index into ``target`` alone."""
    if installer == "uv":
        return uv_install(index_url, "--target", str(target), "app")
    release = installer.split()[1]
    return pip_install(pip_python(release), index_url, "--target", str(target), "app")


def install_through(web, installer: str, pip_python, target) -> list[str]:
    """Install app through a web server that is stopped after; the dist-infos installed."""
    try:
        result = install(installer, pip_python, web.url, target)
    finally:
        web.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(path.name for path in target.iterdir() if path.name.endswith(".dist-info"))


def publish_projects(tmp_path, mountpoint):
    """Copy in, as a user would: an app that needs lib, and lib in two versions."""
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "app-1.0-py3-none-any.whl").write_bytes(
        wheel("app", "1.0", requires=("lib",), requires_python=">=3.8"))
    (dist / "lib-1.0-py3-none-any.whl").write_bytes(wheel("lib", "1.0", requires_python=">=3"))
    (dist / "lib-2.0-py3-none-any.whl").write_bytes(wheel("lib", "2.0", requires_python=">=4"))
    subprocess.run(["cp", *sorted(dist.iterdir()), mountpoint], check=True)


@pytest.mark.parametrize("installer", INSTALLERS)
@pytest.mark.parametrize("server", ["http.server", "nginx"])
def test_installers_through_web_servers(request, installer, server, pip_python, mounts,
                                        tmp_path, public_dir, moto_server):
    if sys.version_info[:2] >= RUNS_BEFORE_PYTHON.get(installer, (99, 0)):
        pytest.skip(f"{installer} does not run on Python {sys.version_info[0]}."
                    f"{sys.version_info[1]}")
    # http.server over a file store, nginx over S3: each server and each store.
    if server == "http.server":
        store = request.getfixturevalue("file_store")
        os.makedirs(store.directory)
        config, start = file_config(store), python_http_server
    else:
        request.getfixturevalue("s3_store")
        config, start = s3_config(moto_server), nginx
    mountpoint = mounts.mount(config, "--allow-other", parent=public_dir)
    publish_projects(tmp_path, mountpoint)
    web = start(mountpoint, tmp_path)
    assert install_through(web, installer, pip_python, tmp_path / "target") == [
        "app-1.0.dist-info", "lib-1.0.dist-info"]
    fetched = web.requests()
    assert "/lib/lib-2.0-py3-none-any.whl" not in fetched  # Requires-Python >=4
    if installer in READ_CORE_METADATA:
        assert "/app/app-1.0-py3-none-any.whl.metadata" in fetched  # PEP 658


@pytest.mark.parametrize("installer", ["pip newest", "uv"])
def test_presigned_pages_install_straight_from_s3(installer, pip_python, s3_store, moto_server,
                                                  mounts, tmp_path, public_dir):
    mountpoint = mounts.mount(s3_config(moto_server, **{"pkgfs.presigned_urls": "true",
                                                        "aws.expire_after": "3600"}),
                              "--allow-other", parent=public_dir)
    publish_projects(tmp_path, mountpoint)
    page = json.loads((mountpoint / "lib" / "index.json").read_bytes())
    assert all(entry["url"].startswith(f"{moto_server.endpoint}/pkgfs-test/packages/")
               for entry in page["files"])
    assert "testing-secret" not in json.dumps(page)
    web = nginx(mountpoint, tmp_path)
    before = len(moto_server.requests())
    assert install_through(web, installer, pip_python, tmp_path / "target") == [
        "app-1.0.dist-info", "lib-1.0.dist-info"]
    assert not [path for path in web.requests() if ".whl" in path]  # bytes never through nginx
    wheels_from_s3 = [path for method, path in moto_server.requests()[before:]
                      if method == "GET" and ".whl" in path]
    assert any("app-1.0-py3-none-any.whl" in path for path in wheels_from_s3)


def test_a_tampered_file_fails_the_install(file_store, mounts, tmp_path, pip_python):
    os.makedirs(file_store.directory)
    mountpoint = mounts.mount(file_config(file_store, **{"pkgfs.cache_ttl": 0}))
    publish_projects(tmp_path, mountpoint)
    stored = os.path.join(file_store.directory, "lib", "1.0", "lib-1.0-py3-none-any.whl")
    tampered = wheel("lib", "1.0", requires_python=">=3", padding=64)  # same name, other bytes
    with open(stored, "wb") as package:
        package.write(tampered)
    web = python_http_server(mountpoint, tmp_path)
    try:
        result = pip_install(pip_python("newest"), web.url, "--target", str(tmp_path / "t"), "app")
    finally:
        web.stop()
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr


def get(url: str, **headers) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(NoRedirects)
    try:
        with opener.open(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *arguments):
        return None


def test_nginx_conf_example_serves_the_index_as_clients_ask(file_store, mounts, tmp_path,
                                                            public_dir):
    os.makedirs(file_store.directory)
    data = wheel("my-pkg", "1.0", padding=300_000)
    wheel_name = "my_pkg-1.0-py3-none-any.whl"
    file_store.add(wheel_name, data)
    mountpoint = mounts.mount(file_config(file_store), "--allow-other", parent=public_dir)
    web = nginx(mountpoint, tmp_path)
    try:
        status, headers, body = get(f"{web.url}my-pkg/{wheel_name}", Range="bytes=1000-200999")
        assert (status, body) == (206, data[1000:201000])
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"

        for accept in ("application/vnd.pypi.simple.v1+json",
                       "application/vnd.pypi.simple.latest+json"):
            status, headers, body = get(f"{web.url}my-pkg/", Accept=accept)
            assert headers["Content-Type"] == "application/vnd.pypi.simple.v1+json", accept
            assert json.loads(body)["name"] == "my-pkg"
        status, headers, body = get(f"{web.url}my-pkg/")
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Cache-Control"] == "no-cache"
        assert wheel_name in body.decode()

        status, headers, _ = get(f"{web.url}my-pkg")
        assert (status, headers["Location"]) == (301, "/my-pkg/")  # absolute_redirect off
        status, _, body = get(f"{web.url}My_Pkg/", Accept="application/vnd.pypi.simple.v1+json")
        assert status == 200 and json.loads(body)["name"] == "my-pkg"

        # nginx keeps pages open and looks at their names again each second: a page
        # changed twice within a second is served whole, new within about a second (10 s
        # here only so that a hang fails), and with a new ETag each time.
        _, first, _ = get(f"{web.url}my-pkg/index.json")
        etags = {first["ETag"]}
        for number in (1, 2):
            name = f"my_pkg-1.{number}.tar.gz"
            (tmp_path / name).write_bytes(b"x" * number)
            subprocess.run(["cp", tmp_path / name, mountpoint / "my-pkg"], check=True)
            deadline = time.monotonic() + 10
            while True:
                _, headers, body = get(f"{web.url}my-pkg/index.json")
                assert int(headers["Content-Length"]) == len(body)
                if name in [entry["filename"] for entry in json.loads(body)["files"]]:
                    break
                assert time.monotonic() < deadline, f"{name} never appeared"
                time.sleep(0.05)
            etags.add(headers["ETag"])
        assert len(etags) == 3
    finally:
        web.stop()
    assert hashlib.sha256(data).hexdigest() in (mountpoint / "my-pkg" / "index.html").read_text()
