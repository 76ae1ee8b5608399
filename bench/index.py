"""Scenario 3: pip installs 50 projects through nginx over a pkgfs mount, against
pypiserver serving the same files and pypicloud serving the same store.

    .venv/bin/python bench/index.py [--projects 50] [--rounds 3]

Target: pkgfs behind nginx no slower than pypiserver or pypicloud.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _setup
from _setup import table

from harness import Mounts, file_config, free_port, wait_for_port
from stores import FileStore, wheel
from webservers import nginx


def pip_install_seconds(index_url: str, projects: list[str], target: Path) -> float:
    """pip installs every project from the index alone, into an empty folder."""
    shutil.rmtree(target, ignore_errors=True)
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                    "--disable-pip-version-check", "--index-url", index_url,
                    "--target", str(target), *projects], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    installed = list(target.glob("*-2.0.dist-info"))  # the newest version of each
    if len(installed) != len(projects):
        raise RuntimeError(f"{index_url}: {len(installed)} of {len(projects)} projects installed")
    return elapsed


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


def pypicloud(store: FileStore, work: Path):
    """pypicloud on the same file store, its cache rebuilt from the store at start."""
    port = free_port()
    config = work / "pypicloud.ini"
    config.write_text(f"""[app:main]
use = egg:pypicloud
pyramid.reload_templates = False
pypi.default_read = everyone
pypi.storage = file
storage.dir = {store.directory}
pypi.db = sql
db.url = sqlite:///{work}/pypicloud.sqlite
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    _setup.require_root_and_fuse()
    work = Path(tempfile.mkdtemp(prefix="pkgfs-bench-index-"))
    os.chmod(work, 0o755)  # nginx's workers pass through it to the mount
    store = FileStore(work / "store")
    projects = [f"bench-project-{number}" for number in range(arguments.projects)]
    for project in projects:
        for version in ("1.0", "1.1", "2.0"):
            store.add(f"{project.replace('-', '_')}-{version}-py3-none-any.whl",
                      wheel(project, version, padding=16 << 10))

    mounts = Mounts(work)
    mountpoint = mounts.mount(file_config(store, **{"pkgfs.index": "true"}), "--allow-other")
    web = nginx(mountpoint, work)
    servers = {"pkgfs + nginx": (None, web.url)}
    servers["pypiserver"] = pypiserver(store, work)
    servers["pypicloud"] = pypicloud(store, work)
    seconds: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _, url in servers.values():  # once each, unmeasured: caches are warm
            pip_install_seconds(url, projects, work / "target")
        for _ in range(arguments.rounds):
            for name, (_, url) in servers.items():
                seconds[name].append(pip_install_seconds(url, projects, work / "target"))
    finally:
        web.stop()
        for process, _ in servers.values():
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        mounts.close()
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"pip install of {arguments.projects} projects, median of {arguments.rounds} rounds")
    print(table([(name, f"{value:.2f}", f"{medians['pkgfs + nginx'] / value:.2f}x")
                 for name, value in medians.items()], ("index", "seconds", "pkgfs time / this")))
    fastest_other = min(value for name, value in medians.items() if name != "pkgfs + nginx")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if medians["pkgfs + nginx"] <= fastest_other * 1.05 else 1  # 5%: noise


if __name__ == "__main__":
    sys.exit(main())
