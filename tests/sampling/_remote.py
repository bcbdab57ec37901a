"""Test helpers for the remote sampling sources: a /metrics page that fails on a schedule,
and a real Prometheus server (Debian's package) on a free loopback port."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runner.target import free_port


class FaultyMetrics:
    """A /metrics endpoint in the test process that forwards the real page of ``upstream``,
    except on a schedule of request numbers: ``garbage`` (not the exposition format), ``slow``
    (answers after ``slow_seconds``) and ``down`` (the listener closes for ``down_seconds``,
    so connections are refused, then it comes back on the same port)."""

    def __init__(
        self, upstream: str, schedule: dict[str, range], *, slow_seconds: float = 3.0, down_seconds: float = 2.5
    ) -> None:
        self.upstream = upstream
        self.schedule = schedule
        self.slow_seconds = slow_seconds
        self.down_seconds = down_seconds
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.requests = 0
        self.served: dict[str, int] = {"ok": 0, "garbage": 0, "slow": 0, "down": 0}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server = self._listen()

    def _mode(self, number: int) -> str:
        for mode, numbers in self.schedule.items():
            if number in numbers:
                return mode
        return "ok"

    def _listen(self) -> http.server.ThreadingHTTPServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with owner._lock:
                    number = owner.requests
                    owner.requests += 1
                mode = owner._mode(number)
                owner.served[mode] += 1
                if mode == "down":
                    self.close_connection = True
                    threading.Thread(target=owner._go_down, daemon=True).start()
                    return
                if mode == "slow":
                    time.sleep(owner.slow_seconds)
                body = b"<html><body>502 Bad Gateway</body></html>\n" if mode == "garbage" else _fetch(owner.upstream)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the sampler gave up on a slow answer
                    pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _go_down(self) -> None:
        server = self._server
        server.shutdown()
        server.server_close()
        if self._stopped.wait(self.down_seconds):
            return
        self._server = self._listen()

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@contextmanager
def prometheus_server(targets: list[str], *, scrape_interval: str = "1s", job: str = "soak") -> Iterator[str]:
    """A real Prometheus on a free loopback port scraping ``targets`` (host:port); yields its URL."""
    binary = prometheus_binary()
    assert binary is not None
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="soak-prometheus-"))
    config = folder / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
        f"scrape_configs:\n  - job_name: {job}\n"
        f"    scrape_interval: {scrape_interval}\n    scrape_timeout: {scrape_interval}\n"
        f"    static_configs:\n      - targets: [{listed}]\n"
    )
    log = open(folder / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log_text = (folder / "prometheus.log").read_text()[-2000:]
                raise RuntimeError(f"prometheus exited ({process.returncode}): {log_text}")
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_series(prometheus: str, query: str, timeout: float = 60.0) -> None:
    """Wait until an instant query has a value (Prometheus scraped the target at least once)."""
    import json
    import urllib.parse

    deadline = time.monotonic() + timeout
    while True:
        address = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            answer = json.loads(urllib.request.urlopen(address, timeout=5).read())
            if answer["data"]["result"]:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prometheus has no series for {query!r} after {timeout:g}s")
        time.sleep(0.5)
