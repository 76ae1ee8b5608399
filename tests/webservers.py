"""Real web servers on loopback that serve a mount: python -m http.server and nginx."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness import free_port, wait_for_port

REPOSITORY = Path(__file__).resolve().parent.parent


class WebServer:
    def __init__(self, command: list[str], port: int, log: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.log = log
        self._log_file = open(log, "ab")
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=self._log_file,
                                        stdin=subprocess.DEVNULL)
        wait_for_port(port, self.process, command[0])

    def requests(self) -> list[str]:
        """The paths of the GET requests served so far."""
        return re.findall(r'"GET (\S+) HTTP', self.log.read_text(errors="replace"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._log_file.close()


def python_http_server(directory: Path, work: Path) -> WebServer:
    port = free_port()
    return WebServer([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                      "--directory", str(directory)], port, work / "http-server.log")


def nginx(directory: Path, work: Path, connections: int = 64) -> WebServer:
    """nginx with the README's config (nginx.conf.example), on a loopback port."""
    executable = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    site = (REPOSITORY / "nginx.conf.example").read_text()
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    site = site.replace("root /mnt/pkgs;", f"root {directory};")
    temp = work / "nginx-temp"
    temp.mkdir(exist_ok=True)
    config = work / "nginx.conf"
    config.write_text(f"""
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections {connections}; }}
http {{
    include /etc/nginx/mime.types;
    access_log {work}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{site}
}}
""")
    server = WebServer([executable, "-c", str(config), "-p", str(work)], port,
                       work / "nginx-access.log")
    return server


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def installer_env() -> dict[str, str]:
    """The environment of an installer that knows no index but ours: no config, no cache."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_NO_CONFIG": "1", "UV_NO_CACHE": "1"}


def pip_install(python: Path, index_url: str, *arguments: str) -> subprocess.CompletedProcess:
    """pip install from our index alone."""
    return subprocess.run([str(python), "-m", "pip", "install", "--index-url", index_url,
                           *arguments], capture_output=True, text=True, env=installer_env(),
                          stdin=subprocess.DEVNULL, timeout=300)


def uv_install(index_url: str, *arguments: str) -> subprocess.CompletedProcess:
    """uv pip install from our index alone, for this interpreter."""
    uv = shutil.which("uv", path=os.path.dirname(sys.executable))
    assert uv, "uv is a test dependency: ./dev test installs it"
    return subprocess.run([uv, "pip", "install", "--python", sys.executable, "--index-url",
                           index_url, *arguments], capture_output=True, text=True,
                          env=installer_env(), stdin=subprocess.DEVNULL, timeout=300)
