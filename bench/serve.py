"""Scenario 4: nginx serving a pkgfs mount against the same nginx serving a plain copy.

A file store of ``--projects`` projects of four 64 KiB wheels each, mounted with
the defaults (and --allow-other, for nginx's workers); the plain copy is the
same tree on the local disk, pages included (read through the mount). Both are
served by nginx with the project's nginx.conf.example, one worker. wrk asks
for random paths of one kind at a time (project pages and the root page as
pip asks for them, JSON; wheels), at 16 and 64 connections, in interleaved
rounds, and the median requests per second of each side are compared.

    .venv/bin/python bench/serve.py [--projects 200] [--rounds 3] [--seconds 5]

Target: the mount at 0.8x the plain copy or better, for each kind and count.
"""

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _setup
from _setup import table

from harness import Mounts, file_config
from stores import FileStore, wheel
from webservers import nginx

JSON = "application/vnd.pypi.simple.v1+json"

# wrk's script: each request a random path of the list, as pip asks for pages.
WRK_SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
request = function()
  return wrk.format("GET", paths[math.random(#paths)], {["Accept"] = "%s"})
end
"""


def requests_per_second(url: str, paths: list[str], connections: int, seconds: int,
                        work: Path) -> float:
    listing = work / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = work / "paths.lua"
    script.write_text(WRK_SCRIPT % (listing, JSON))
    answered = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s",
                               "-s", str(script), url], capture_output=True, text=True,
                              check=True).stdout
    if "Non-2xx" in answered:
        raise RuntimeError(f"wrk got errors from {url}:\n{answered}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", answered).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    arguments = parser.parse_args()
    _setup.require_root_and_fuse()
    _setup.require_tools("wrk", "nginx")
    work = Path(tempfile.mkdtemp(prefix="pkgfs-bench-serve-"))
    work.chmod(0o755)  # nginx's workers pass through to the mount and the copy
    store = FileStore(work / "store")
    wheels = []
    for project in range(arguments.projects):
        for version in range(4):
            name = f"proj{project}-1.{version}-py3-none-any.whl"
            store.add(name, wheel(f"proj{project}", f"1.{version}", padding=64 << 10))
            wheels.append(f"/proj{project}/{name}")
    mounts = Mounts(work / "state")
    (work / "state").mkdir()
    mountpoint = mounts.mount(file_config(store), "--allow-other", name="mnt", parent=work)
    plain = work / "plain"
    shutil.copytree(mountpoint, plain)
    for page in ("index.html", "index.json"):  # found by name, never listed: copied by name
        shutil.copy(mountpoint / page, plain / page)
        for project in range(arguments.projects):
            shutil.copy(mountpoint / f"proj{project}" / page, plain / f"proj{project}" / page)
    kinds = {"project pages": [f"/proj{project}/" for project in range(arguments.projects)],
             "root page": ["/"], "64 KiB wheels": wheels}
    servers = {}
    try:
        for side, root in (("pkgfs", mountpoint), ("plain", plain)):
            (work / f"nginx-{side}").mkdir()
            servers[side] = nginx(root, work / f"nginx-{side}", connections=1024)
        rows = []
        for kind, paths in kinds.items():
            for connections in (16, 64):
                figures = {side: [] for side in servers}
                for _ in range(arguments.rounds):  # interleaved: the machine's drift hits both
                    for side, server in servers.items():
                        figures[side].append(requests_per_second(
                            f"http://127.0.0.1:{server.port}", paths, connections,
                            arguments.seconds, work))
                pkgfs, plain_rps = (statistics.median(figures[side]) for side in ("pkgfs", "plain"))
                rows.append((kind, connections, f"{pkgfs:.0f}", f"{plain_rps:.0f}",
                             f"{pkgfs / plain_rps:.2f}x"))
                print(rows[-1], flush=True)
    finally:
        for server in servers.values():
            server.stop()
        mounts.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"nginx {_nginx_version()} over a pkgfs mount (file store) and over a plain copy; "
          f"median of {arguments.rounds} rounds of {arguments.seconds} s")
    print(table(rows, ("requests", "connections", "pkgfs req/s", "plain req/s",
                       "pkgfs / plain (target >= 0.8)")))
    return 0


def _nginx_version() -> str:
    answered = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return answered.stderr.strip().rpartition("/")[2]


if __name__ == "__main__":
    sys.exit(main())
