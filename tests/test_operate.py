"""Mounting the way operators do: fstab and mount(8), systemd's notify protocol, pkgfs status,
mount bookkeeping that cannot confuse two mounts, installing as a tool."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import file_config, pkgfs, s3_config, skip_unless_root
from proxy import CuttableProxy
from stores import wheel

VENV_BIN = os.path.dirname(sys.executable)
WHEEL = "my_pkg-1.0-py3-none-any.whl"


def mount_entries(mountpoint: Path) -> int:
    """How many mounts sit on a mount point (stacked mounts count each)."""
    with open("/proc/self/mountinfo") as mountinfo:
        return sum(line.split()[4] == str(mountpoint) for line in mountinfo)


def wait_until(condition, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit  # a guard against a hang, not a measurement
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_mount_points_whose_paths_look_alike_keep_apart(file_store, mounts, tmp_path):
    os.makedirs(file_store.directory)
    (tmp_path / "pkgs").mkdir()
    a = mounts.mount(file_config(file_store), name="a", parent=tmp_path / "pkgs")
    b = mounts.mount(file_config(file_store), name="pkgs_a")
    mounts.unmount(a)
    assert os.path.ismount(b) and os.listdir(b) == []  # the other daemon still serves
    assert len(list(mounts.state.glob("pkgfs/*.pid"))) == 1


def test_two_mounts_of_one_mount_point_at_once_make_one_mount(file_store, mounts, tmp_path):
    os.makedirs(file_store.directory)
    config = tmp_path / "store.conf"
    config.write_text(file_config(file_store))
    mountpoint = tmp_path / "racing"
    mountpoint.mkdir()
    for round_number in range(5):
        racers = [subprocess.Popen([sys.executable, "-m", "pkgfs", "mount", mountpoint, "-c",
                                    config], env={**os.environ, **mounts.env},
                                   stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                  for _ in range(2)]
        outcomes = sorted((racer.wait(timeout=120), racer.stderr.read()) for racer in racers)
        assert [code for code, _ in outcomes] == [0, 1], (round_number, outcomes)
        assert "pkgfs: error:" in outcomes[1][1]
        assert mount_entries(mountpoint) == 1, round_number
        assert pkgfs("umount", str(mountpoint), env=mounts.env).returncode == 0
        assert mount_entries(mountpoint) == 0


def test_status_says_what_each_mount_is_doing(s3_store, moto_server, mounts, tmp_path):
    s3_store.add(WHEEL, wheel("my-pkg", "1.0"))
    mountpoint = mounts.mount(s3_config(moto_server))
    os.listdir(mountpoint / "my-pkg")
    (tmp_path / "other-1.0.tar.gz").write_bytes(b"other")
    subprocess.run(["cp", tmp_path / "other-1.0.tar.gz", mountpoint], check=True)
    refused = subprocess.run(["cp", tmp_path / "other-1.0.tar.gz", mountpoint / "README"],
                             capture_output=True)
    assert refused.returncode != 0

    def figures():
        answered = pkgfs("status", "--json", env=mounts.env)
        assert answered.returncode == 0, answered.stderr
        [found] = json.loads(answered.stdout)
        return found
    wait_until(lambda: figures()["copies refused"] == 1, "status never showed the copies")
    found = figures()
    assert found["mountpoint"] == str(mountpoint)
    assert found["store"].startswith("s3 bucket pkgfs-test")
    assert (found["files"], found["projects"]) == (2, 2)
    # The copy's PUT, and the same bytes PUT again under If-None-Match, which S3 refuses:
    # the check that the endpoint honours conditional writes (not a failed request).
    assert found["requests"]["LIST"] >= 1 and found["requests"]["PUT"] == 2
    assert found["failed requests"] == 0
    assert found["copies stored"] == 1
    assert 0 < found["memory MiB"] < 1000 and found["listing age s"] >= 0
    text = pkgfs("status", str(mountpoint), env=mounts.env)
    assert f"mount: {mountpoint}" in text.stdout
    assert "copies: 1 stored, 1 refused" in text.stdout
    assert "testing-secret" not in text.stdout + json.dumps(found)


def test_status_counts_failed_requests_and_says_the_last(s3_store, moto_server, mounts):
    proxy = CuttableProxy(moto_server.port)
    try:
        mountpoint = mounts.mount(s3_config(moto_server, **{
            "aws.endpoint_url": proxy.endpoint, "pkgfs.cache_ttl": 0, "pkgfs.timeout": 1}))
        proxy.cut()
        with pytest.raises(OSError):
            os.listdir(mountpoint)

        def failures():
            [found] = json.loads(pkgfs("status", "--json", env=mounts.env).stdout)
            return found
        wait_until(lambda: failures()["failed requests"] > 0, "no failed request counted")
        assert "ListObjectsV2" in failures()["last error"]
        proxy.restore()
    finally:
        proxy.close()


def test_status_of_a_mount_whose_daemon_died(file_store, mounts):
    os.makedirs(file_store.directory)
    mountpoint = mounts.mount(file_config(file_store))
    [pid_file] = mounts.state.glob("pkgfs/*.pid")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    wait_until(lambda: "daemon is gone" in pkgfs("status", env=mounts.env).stdout,
               "status never said the daemon died")
    assert pkgfs("umount", str(mountpoint), env=mounts.env).returncode == 0  # stale: cleared
    mounts.mounted.remove(mountpoint)
    assert "no pkgfs mount" in pkgfs("status", env=mounts.env).stdout


@pytest.fixture
def pkgfs_on_the_system_path():
    """mount(8) runs helpers with the system's PATH: pkgfs must be in /usr/local/bin, as the
    README says. This checkout's pkgfs is put there for the test, unless one is there."""
    skip_unless_root("mount(8) with an fstab, and /usr/local/bin")
    system = Path("/usr/local/bin/pkgfs")
    ours = Path(VENV_BIN) / "pkgfs"
    if system.exists() and system.resolve() != ours.resolve():
        pytest.skip("/usr/local/bin/pkgfs is another install's")
    made = not system.exists()
    if made:
        system.symlink_to(ours)
    yield
    if made:
        system.unlink()


@pytest.mark.parametrize("form", ["fuse.pkgfs", "fuse with the program's path"])
def test_fstab_lines_mount_with_ro_and_allow_other(form, file_store, mounts, tmp_path,
                                                   public_dir, pkgfs_on_the_system_path):
    """mount(8) hands the line to mount.fuse3, which runs ``pkgfs CONFIG MOUNTPOINT -o
    OPTIONS``: ro and allow_other are honoured, _netdev and noatime are mount(8)'s own."""
    file_store.add(WHEEL, b"wheel")
    config = tmp_path / "store.conf"
    config.write_text(file_config(file_store))
    mountpoint = public_dir / "fstab"
    mountpoint.mkdir()
    source, kind = ((config, "fuse.pkgfs") if form == "fuse.pkgfs" else
                    (f"{os.path.join(VENV_BIN, 'pkgfs')}#{config}", "fuse"))
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{source} {mountpoint} {kind} ro,allow_other,_netdev,noatime 0 0\n")
    mounted = subprocess.run(["mount", "--fstab", fstab, mountpoint], capture_output=True,
                             text=True, env={**os.environ, **mounts.env}, timeout=120)
    assert mounted.returncode == 0, mounted.stderr
    mounts.mounted.append(mountpoint)
    assert os.listdir(mountpoint) == ["my-pkg"]
    written = subprocess.run(["cp", config, mountpoint / "x-1.0.tar.gz"], capture_output=True,
                             text=True)
    assert "Read-only file system" in written.stderr
    as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "ls", mountpoint], capture_output=True, text=True)
    assert as_nobody.stdout.split() == ["my-pkg"]


def test_systemd_is_told_ready_once_the_mount_works_and_stop_unmounts(file_store, mounts,
                                                                     tmp_path):
    """Type=notify: READY=1 as a datagram on $NOTIFY_SOCKET; SIGTERM (systemd's stop)
    unmounts cleanly."""
    file_store.add(WHEEL, b"wheel")
    config = tmp_path / "store.conf"
    config.write_text(file_config(file_store))
    mountpoint = tmp_path / "unit"
    mountpoint.mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(120)  # a guard against a hang
    daemon = subprocess.Popen([os.path.join(VENV_BIN, "pkgfs"), "mount", "-f", mountpoint,
                               "-c", config],
                              env={**os.environ, **mounts.env,
                                   "NOTIFY_SOCKET": str(tmp_path / "notify")},
                              stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        message = notify.recv(4096).decode()
        assert "READY=1" in message.splitlines()
        assert os.listdir(mountpoint) == ["my-pkg"]  # already working when systemd hears it
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        assert "STOPPING=1" in notify.recv(4096).decode()
    finally:
        if daemon.poll() is None:
            daemon.kill()
        notify.close()
    assert not os.path.ismount(mountpoint)
    assert "Traceback" not in daemon.stderr.read()


def test_an_unusable_cache_dir_is_one_line(file_store, mounts, tmp_path):
    os.makedirs(file_store.directory)
    (tmp_path / "a-file").write_text("not a folder")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    config = tmp_path / "bad.conf"
    config.write_text(file_config(file_store, **{"pkgfs.cache_dir": tmp_path / "a-file"}))
    result = pkgfs("mount", str(mountpoint), "-c", str(config), env=mounts.env)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pkgfs: error: ")
    assert "pkgfs.cache_dir" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("uv", path=VENV_BIN) is None, reason="uv is a test dependency")
def test_uv_tool_install_gives_a_working_pkgfs(tmp_path):
    uv = shutil.which("uv", path=VENV_BIN)
    checkout = Path(__file__).resolve().parent.parent
    env = {key: value for key, value in os.environ.items() if not key.startswith(("UV_", "PIP_"))}
    env.update(UV_TOOL_DIR=str(tmp_path / "tools"), UV_TOOL_BIN_DIR=str(tmp_path / "bin"),
               UV_CACHE_DIR=str(tmp_path / "uv-cache"), UV_NO_CONFIG="1")
    installed = subprocess.run([uv, "tool", "install", "--python", sys.executable, str(checkout)],
                               capture_output=True, text=True, env=env, timeout=600,
                               stdin=subprocess.DEVNULL)
    assert installed.returncode == 0, installed.stderr
    helped = subprocess.run([tmp_path / "bin" / "pkgfs", "--help"], capture_output=True,
                            text=True)
    assert helped.returncode == 0 and "mount" in helped.stdout and "status" in helped.stdout
