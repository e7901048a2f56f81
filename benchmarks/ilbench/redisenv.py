"""A Redis to benchmark against, and a client that counts round trips.

Without ``INTERLOCK_BENCH_REDIS_URL`` a private ``redis-server`` is started on a free port with
persistence off (``--save "" --appendonly no``) and shut down afterwards; with it, that server is
used and only keys under the benchmark's own prefix are written and deleted.

Round trips are counted where they happen: each ``send_packed_command`` of a connection writes
one request (a command, a whole pipeline or a MULTI/EXEC block) and is followed by waiting for
its reply. That is the same count a wrapper on ``execute_command`` plus ``Pipeline.execute``
gives, and it also sees WATCH, script (re)loads and pipeline-immediate commands.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ilbench.driver import RoundTrips

REDIS_SERVER = "/usr/bin/redis-server"
ENV_URL = "INTERLOCK_BENCH_REDIS_URL"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_url(timeout: float = 10.0) -> Iterator[tuple[str, bool]]:
    """Yield (url, private). A private server is stopped when the block exits."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url, False
        return
    import redis

    binary = REDIS_SERVER if os.path.exists(REDIS_SERVER) else shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"no redis-server binary (looked for {REDIS_SERVER}); set {ENV_URL}")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + timeout
        probe = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {proc.returncode}")
            try:
                if probe.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not answer PING in "
                                   f"{timeout:.0f}s")
            time.sleep(0.05)
        probe.close()
        yield url, True
    finally:
        _stop(proc, url)


def _stop(proc: subprocess.Popen[bytes], url: str) -> None:
    if proc.poll() is None:
        import redis

        with contextlib.suppress(Exception):
            redis.Redis.from_url(url, socket_timeout=2.0).shutdown(nosave=True)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def counting_client(url: str, rts: RoundTrips) -> Any:
    """A ``redis.Redis`` whose connections count requests into ``rts``."""
    import redis
    from redis.connection import Connection, parse_url

    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    base: type[Any] = options.get("connection_class", Connection)

    class CountingConnection(base):  # type: ignore[misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            rts.n += 1
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


def new_prefix() -> str:
    return f"ilbench-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def delete_matching(client: Any, token: str) -> int:
    """Delete every key containing ``token`` (SCAN + UNLINK, in batches). The tokens are unique
    per benchmark process, so this never touches anybody else's keys."""
    deleted = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=f"*{token}*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted
