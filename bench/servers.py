"""Three local mirrors on 127.0.0.1 serving the forged tree: nginx when it is installed (its own
config file and temp prefix under the run directory, free ports, started here and stopped at the
end), else the much slower aiohttp fallback of staticserver.py (said loudly).

Both write one access-log line per request, `port status body_bytes_sent bytes_sent method uri`,
which is how the harness counts requests, 304s and bytes per phase (`mark()` / `since(mark)`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MIRROR_NAMES = ("mirror-a", "mirror-b", "mirror-c")


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


@dataclass
class LogSummary:
    requests: int = 0
    by_status: dict | None = None
    body_bytes: int = 0
    bytes_sent: int = 0  # headers included

    @property
    def share_304(self) -> float:
        return (self.by_status or {}).get(304, 0) / self.requests if self.requests else 0.0

    def to_json(self) -> dict:
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted((self.by_status or {}).items())},
            "body_bytes": self.body_bytes,
            "bytes_sent": self.bytes_sent,
            "share_304": self.share_304,
        }


class Mirrors:
    kind = "?"
    fallback = False
    version = ""

    def __init__(self, root: Path, workdir: Path):
        self.root = Path(root).resolve()
        self.workdir = Path(workdir).resolve()
        self.ports: list[int] = []

    @property
    def base_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def log_files(self) -> list[Path]:
        raise NotImplementedError

    def mark(self) -> dict[Path, int]:
        return {f: (f.stat().st_size if f.exists() else 0) for f in self.log_files()}

    def since(
        self, mark: dict[Path, int], expect: int | None = None, settle_s: float = 2.0
    ) -> LogSummary:
        """What the log says happened after `mark`.  The server writes a line after the response
        is sent, so wait (briefly) until `expect` lines are there or the count stops moving."""
        deadline = time.monotonic() + settle_s
        last = -1
        while True:
            lines = []
            for f in self.log_files():
                if f.exists():
                    with open(f, "rb") as fh:
                        fh.seek(mark.get(f, 0))
                        lines += fh.read().decode("utf-8", "replace").splitlines()
            n = len(lines)
            if (
                (expect is not None and n >= expect)
                or time.monotonic() > deadline
                or (expect is None and n == last)
            ):
                break
            last = n
            time.sleep(0.05)
        s = LogSummary(by_status={})
        for line in lines:
            parts = line.split()
            if len(parts) < 4:
                continue
            status = int(parts[1])
            s.requests += 1
            s.by_status[status] = s.by_status.get(status, 0) + 1
            s.body_bytes += int(parts[2])
            s.bytes_sent += int(parts[3])
        return s

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "fallback": self.fallback,
            "version": self.version,
            "base_urls": self.base_urls,
        }

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


NGINX_CONF = (
    """\
# Written by bench/servers.py for one benchmark run; nothing outside {prefix} is touched.
daemon off;
master_process on;
worker_processes {workers};
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 32768;
events {{ worker_connections 8192; }}
http {{
    types {{ application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    # Cached descriptors stay open: keep the cache well under worker_rlimit_nofile, or a large
    # tree runs the worker out of descriptors ("Too many open files" -> 404/500s).
    open_file_cache max=8192 inactive=60s;
    open_file_cache_valid 60s;
"""
    "    etag on;                        "
    "# ETag and Last-Modified on static files: conditional GETs get 304\n"
    """\
    if_modified_since exact;
    server_tokens off;
    log_format bench '$server_port $status $body_bytes_sent $bytes_sent $request_method $uri';
    access_log {prefix}/access.log bench;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{servers}
}}
"""
)

SERVER_BLOCK = """\
    server {{   # {name}
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{ try_files $uri =404; }}
    }}
"""


class NginxMirrors(Mirrors):
    kind = "nginx"

    def __init__(self, root: Path, workdir: Path, *, workers: int = 1, binary: str | None = None):
        super().__init__(root, workdir)
        self.binary = binary or find_nginx()
        if self.binary is None:
            raise RuntimeError("nginx is not installed")
        self.workers = workers
        self.prefix = self.workdir / "nginx"
        self.proc: subprocess.Popen | None = None
        v = subprocess.run([self.binary, "-v"], capture_output=True, text=True)
        self.version = (v.stderr or v.stdout).strip().split("/")[-1]

    def log_files(self) -> list[Path]:
        return [self.prefix / "access.log"]

    def start(self) -> None:
        if self.prefix.exists():
            shutil.rmtree(self.prefix)
        (self.prefix / "tmp").mkdir(parents=True)
        for _attempt in range(5):
            self.ports = free_ports(len(MIRROR_NAMES))
            servers = "".join(
                SERVER_BLOCK.format(name=n, port=p, root=self.root.resolve())
                for n, p in zip(MIRROR_NAMES, self.ports, strict=True)
            )
            user = (
                "user root;" if os.geteuid() == 0 else ""
            )  # workers must read the tree wherever it lives
            conf = self.prefix / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(
                    prefix=self.prefix, workers=self.workers, user=user, servers=servers
                )
            )
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.prefix),
                    "-c",
                    str(conf),
                    "-e",
                    str(self.prefix / "error.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self.prefix / "stderr.log", "ab"),
            )
            if self._wait_listening(5.0):
                return
            self.stop()
            time.sleep(0.2)
        raise RuntimeError(f"nginx did not start; see {self.prefix}/error.log and stderr.log")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                for p in self.ports:
                    socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class PythonMirrors(Mirrors):
    """The fallback: one staticserver.py process per mirror."""

    kind = "python-aiohttp-fallback"
    fallback = True

    def __init__(self, root: Path, workdir: Path):
        super().__init__(root, workdir)
        import aiohttp

        self.version = f"aiohttp {aiohttp.__version__}"
        self.dir = self.workdir / "pyserver"
        self.procs: list[subprocess.Popen] = []

    def log_files(self) -> list[Path]:
        return [self.dir / f"{n}.log" for n in MIRROR_NAMES]

    def start(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        repo = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
        }
        try:
            for name in MIRROR_NAMES:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.staticserver",
                        "--root",
                        str(self.root),
                        "--log",
                        str(self.dir / f"{name}.log"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=open(self.dir / f"{name}.stderr", "ab"),
                    text=True,
                    env=env,
                    cwd=repo,
                )
                self.procs.append(proc)
                line = proc.stdout.readline()  # type: ignore[union-attr]
                if not line.startswith("ready "):
                    raise RuntimeError(
                        f"fallback server {name} did not start: {line!r}; see "
                        f"{self.dir}/{name}.stderr"
                    )
                self.ports.append(int(line.split()[1]))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def start_mirrors(
    root: Path, workdir: Path, prefer: str = "auto", *, nginx_workers: int = 1, log=print
) -> Mirrors:
    """nginx if it is installed (and not refused), else the fallback, saying so."""
    if prefer in ("auto", "nginx") and find_nginx():
        m: Mirrors = NginxMirrors(root, workdir, workers=nginx_workers)
    else:
        if prefer == "nginx":
            raise RuntimeError(
                "nginx was asked for but is not installed (bash bench/run installs it with apt-get)"
            )
        why = "asked for" if prefer == "python" else "nginx is not installed"
        log("!" * 78)
        log(f"! FALLBACK: {why}; serving the mirrors with a Python aiohttp static server.")
        log(
            "! It is several times slower than nginx: "
            "the ratios below are NOT comparable with the targets."
        )
        log("!" * 78)
        m = PythonMirrors(root, workdir)
    m.start()
    return m
