"""Scenario 3: pip (and uv) install 50 projects through nginx over a pkgfs mount.

File store: against pypiserver serving the same files and pypicloud serving
the same store, warm. Also the time each index takes to answer one request
for a project page and for a wheel, with one kept-alive connection, so the
server's own share shows.

S3 store 20 ms away (moto behind a delaying proxy): first installs, from a
fresh mount with an empty cache, against pypicloud with its S3 backend
started at that moment (its start-up, which reads the bucket, counted), then
warm installs.

    .venv/bin/python bench/index.py [--projects 50] [--rounds 5] [--wheel-kib 16,64,256,1024]
                                    [--only file s3]

Targets: pkgfs behind nginx no slower than pypiserver or pypicloud; on S3,
first installs no slower than pypicloud's, warm installs faster.
"""

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import _setup
from _setup import table

import boto3

from harness import BUCKET, CREDENTIALS, Mounts, MotoServer, file_config, free_port, \
    s3_config, wait_for_port
from proxy import CuttableProxy
from stores import FileStore, S3Store, wheel
from webservers import installer_env, nginx

PKGFS = "pkgfs + nginx"
UV = shutil.which("uv", path=os.path.dirname(sys.executable))


def install_command(client: str, index_url: str, target: Path) -> list[str]:
    if client == "uv":
        return [UV, "pip", "install", "--no-cache", "--python", sys.executable,
                "--index-url", index_url, "--target", str(target)]
    return [sys.executable, "-m", "pip", "install", "--no-cache-dir",
            "--disable-pip-version-check", "--index-url", index_url, "--target", str(target)]


def install_seconds(client: str, index_url: str, projects: list[str], target: Path) -> float:
    """pip or uv installs every project from the index alone, into an empty folder."""
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([*install_command(client, index_url, target), *projects], check=True,
                   env=installer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    installed = list(target.glob("*-2.0.dist-info"))  # the newest version of each
    if len(installed) != len(projects):
        raise RuntimeError(f"{client} from {index_url}: "
                           f"{len(installed)} of {len(projects)} projects installed")
    return elapsed


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port)


def get(connection: http.client.HTTPConnection, url: str) -> bytes:
    connection.request("GET", urlsplit(url).path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {url}: HTTP {response.status}")
    return body


def request_milliseconds(url: str, times: int = 200) -> float:
    """The median time of one GET of url on one kept-alive connection, body read whole."""
    connection = connect(url)
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        get(connection, url)
        samples.append(time.perf_counter() - started)
    connection.close()
    return statistics.median(samples) * 1000


def page_and_wheel_urls(index_url: str, project: str) -> tuple[str, str]:
    """A project's page on an index and its newest wheel, found by following the page's link."""
    page = urljoin(index_url, f"{project}/")
    connection = connect(page)
    html = get(connection, page).decode()
    connection.close()
    link = re.search(r'href="([^"#]+-2\.0-py3-none-any\.whl)', html)
    if link is None:
        raise RuntimeError(f"{page}: no link to the 2.0 wheel")
    return page, urljoin(page, link.group(1))


def pypiserver(store: FileStore, work: Path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1",
                                "-p", str(port), "-a", ".", "-P", ".", store.directory],
                               stdout=subprocess.DEVNULL, stderr=open(work / "pypiserver.log", "w"))
    wait_for_port(port, process, "pypiserver")
    return process, f"http://127.0.0.1:{port}/simple/"


# pypicloud 1.3.12, its latest release, does not start on Python 3.11 as it is:
# pyramid_duh calls inspect.getargspec, removed in 3.11. The benchmark gives it back.
PSERVE_ON_PYTHON_3_11 = """
import collections, inspect, sys
ArgSpec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")
def getargspec(function):
    spec = inspect.getfullargspec(function)
    return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)
inspect.getargspec = getargspec
from pyramid.scripts.pserve import main
sys.exit(main(["pserve", sys.argv[1]]))
"""


def pypicloud(storage: str, work: Path):
    """pypicloud on the same store (its storage settings given), its cache rebuilt from the
    store at start, before it answers."""
    port = free_port()
    config = work / "pypicloud.ini"
    database = work / "pypicloud.sqlite"
    database.unlink(missing_ok=True)
    config.write_text(f"""[app:main]
use = egg:pypicloud
pyramid.reload_templates = False
pypi.default_read = everyone
{storage}
pypi.db = sql
db.url = sqlite:///{database}
pypi.fallback = none
auth.admins =
session.encrypt_key = {'1' * 64}
session.validate_key = {'2' * 64}
session.secure = false

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}
""")
    process = subprocess.Popen([sys.executable, "-c", PSERVE_ON_PYTHON_3_11, str(config)],
                               stdout=subprocess.DEVNULL, stderr=open(work / "pypicloud.log", "w"))
    wait_for_port(port, process, "pypicloud")
    return process, f"http://127.0.0.1:{port}/simple/"


def populate(store, projects: list[str], sizes_kib: list[int]) -> None:
    """Three versions of each project; wheels of the given sizes in turn."""
    for number, project in enumerate(projects):
        padding = sizes_kib[number % len(sizes_kib)] << 10
        for version in ("1.0", "1.1", "2.0"):
            store.add(f"{project.replace('-', '_')}-{version}-py3-none-any.whl",
                      wheel(project, version, padding=padding))


def file_scenario(projects: list[str], sizes_kib: list[int], rounds: int, work: Path) -> list:
    """Warm installs from pkgfs + nginx, pypiserver and pypicloud on one file store."""
    store = FileStore(work / "store")
    populate(store, projects, sizes_kib)
    mounts = Mounts(work)
    mountpoint = mounts.mount(file_config(store), "--allow-other")
    web = nginx(mountpoint, work)
    servers = {PKGFS: (None, web.url)}
    servers["pypiserver"] = pypiserver(store, work)
    servers["pypicloud"] = pypicloud(f"pypi.storage = file\nstorage.dir = {store.directory}",
                                     work)
    clients = ("pip", "uv")
    seconds = {(client, name): [] for client in clients for name in servers}
    latency = {}
    try:
        for client in clients:
            for _, url in servers.values():  # once each, unmeasured: caches are warm
                install_seconds(client, url, projects, work / "target")
        for _ in range(rounds):
            for client, name in seconds:
                url, target = servers[name][1], work / "target"
                seconds[client, name].append(install_seconds(client, url, projects, target))
        for name, (_, url) in servers.items():
            latency[name] = [request_milliseconds(page) for page in
                             page_and_wheel_urls(url, projects[1 % len(projects)])]
    finally:
        web.stop()
        for process, _ in servers.values():
            if process is not None:
                stop(process)
        mounts.close()
    median = {key: statistics.median(values) for key, values in seconds.items()}
    print(f"File store: install of {len(projects)} projects (wheels of {sizes_kib} KiB, "
          f"3 versions each), median of {rounds} rounds")
    rows = []
    for name in servers:
        row = [name]
        for client in clients:
            ratio = median[client, PKGFS] / median[client, name]
            row += [f"{median[client, name]:.2f}", f"{ratio:.2f}x"]
        rows.append(tuple(row + [f"{latency[name][0]:.2f}", f"{latency[name][1]:.2f}"]))
    print(table(rows, ("index", "pip s", "pkgfs time / this", "uv s", "pkgfs time / this",
                       "page ms", f"{sizes_kib[1 % len(sizes_kib)]} KiB wheel ms")))
    return [f"{client} from {name}" for (client, name), value in median.items()
            if name != PKGFS and median[client, PKGFS] > value * 1.05]  # 5%: noise


S3_LATENCY = 0.020


def s3_scenario(projects: list[str], sizes_kib: list[int], rounds: int, work: Path) -> list:
    """First installs (a fresh mount and cache; pypicloud started then) and warm ones, from
    pkgfs + nginx and from pypicloud, on one bucket 20 ms away."""
    moto = MotoServer(work / "moto.log")
    moto.start()
    proxy = CuttableProxy(moto.port, latency=S3_LATENCY)
    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=BUCKET)
    populate(S3Store(client, BUCKET, prefix="packages/"), projects, sizes_kib)
    pypicloud_storage = "\n".join((
        "pypi.storage = s3", f"storage.bucket = {BUCKET}", "storage.prefix = packages/",
        f"storage.endpoint_url = {proxy.endpoint}", "storage.region_name = us-east-1",
        "storage.addressing_style = path",
        f"storage.aws_access_key_id = {CREDENTIALS['AWS_ACCESS_KEY_ID']}",
        f"storage.aws_secret_access_key = {CREDENTIALS['AWS_SECRET_ACCESS_KEY']}"))
    first, warm = {}, {}
    try:
        for installer in ("pip", "uv"):
            mounts = Mounts(work / f"pkgfs-{installer}")  # its own, empty, cache_dir
            mounts.tmp_path.mkdir(mode=0o755)
            started = time.perf_counter()
            mountpoint = mounts.mount(s3_config(moto, **{"aws.endpoint_url": proxy.endpoint}),
                                      "--allow-other")
            web = nginx(mountpoint, mounts.tmp_path)
            first[installer, PKGFS], warm[installer, PKGFS] = installs(
                installer, web.url, projects, work, rounds, started)
            web.stop()
            mounts.close()

            started = time.perf_counter()
            process, url = pypicloud(pypicloud_storage, work)
            first[installer, "pypicloud"], warm[installer, "pypicloud"] = installs(
                installer, url, projects, work, rounds, started)
            stop(process)
    finally:
        proxy.close()
        moto.stop()
    print(f"S3 store {S3_LATENCY * 1000:.0f} ms away: install of {len(projects)} projects, "
          f"first (from start-up) and warm (median of {rounds})")
    rows = []
    for key, name in ((PKGFS, PKGFS), ("pypicloud", "pypicloud 1.3.12 (S3)")):
        row = [name]
        for installer in ("pip", "uv"):
            row += [f"{first[installer, key]:.2f}", f"{warm[installer, key]:.2f}"]
        rows.append(tuple(row))
    print(table(rows, ("index", "pip first s", "pip warm s", "uv first s", "uv warm s")))
    slower = []
    for installer in ("pip", "uv"):
        first_ratio = first[installer, PKGFS] / first[installer, "pypicloud"]
        warm_ratio = warm[installer, PKGFS] / warm[installer, "pypicloud"]
        print(f"{installer}: pkgfs time / pypicloud's: first {first_ratio:.2f}x (target <= 1), "
              f"warm {warm_ratio:.2f}x (target < 1)")
        if first_ratio > 1.05:
            slower.append(f"{installer} first installs")
        if warm_ratio >= 1:
            slower.append(f"{installer} warm installs")
    return slower


def installs(installer: str, url: str, projects: list[str], work: Path, rounds: int,
             started: float) -> tuple[float, float]:
    """The first install, counted from ``started`` (the index's start), and the median warm
    one."""
    install_seconds(installer, url, projects, work / "target")
    first = time.perf_counter() - started
    warm = [install_seconds(installer, url, projects, work / "target") for _ in range(rounds)]
    return first, statistics.median(warm)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wheel-kib", default="16,64,256,1024",
                        help="wheel sizes, taken in turn by the projects (default: the spread "
                             "of common pure-Python wheels, 16 KiB to 1 MiB)")
    parser.add_argument("--only", nargs="*", default=["file", "s3"])
    arguments = parser.parse_args()
    _setup.require_root_and_fuse()
    if UV is None:
        sys.exit("bench: uv is missing beside this Python: ./dev setup installs it")
    projects = [f"bench-project-{number}" for number in range(arguments.projects)]
    sizes_kib = [int(size) for size in arguments.wheel_kib.split(",")]
    slower = []
    for scenario in arguments.only:
        work = Path(tempfile.mkdtemp(prefix=f"pkgfs-bench-index-{scenario}-"))
        os.chmod(work, 0o755)  # nginx's workers pass through it to the mount
        try:
            run = file_scenario if scenario == "file" else s3_scenario
            slower += run(projects, sizes_kib, arguments.rounds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if slower:
        print("pkgfs is slower than its target in:", ", ".join(slower))
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
