"""Fixtures of the Redis adapter tests: a private redis-server, unique namespaces, cleanup.

The session uses ``INTERLOCK_TEST_REDIS_URL`` when set; otherwise it starts a private
``redis-server`` (no persistence) on a free port. When neither works the tests fail under CI
(``CI`` set) and are skipped otherwise. Every test gets a unique namespace and its keys are
deleted afterwards (only keys under that namespace: safe on a shared server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from interlock_redis import RedisStore

ENV_URL = "INTERLOCK_TEST_REDIS_URL"
SERVER_BINARY = shutil.which("redis-server")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Redis tests cannot run under CI: {reason}")
    pytest.skip(f"Redis tests skipped: {reason}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server process on 127.0.0.1 (``--port 0`` is not supported by
    redis-server, so a free port is picked by binding a socket first)."""

    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        assert SERVER_BINARY is not None
        self.directory = directory
        self.durable = durable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        assert SERVER_BINARY is not None
        args = [SERVER_BINARY, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", str(self.directory), "--daemonize", "no"]
        if self.durable:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self, deadline_seconds: float = 15.0) -> None:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_ready(deadline_seconds)

    def wait_ready(self, deadline_seconds: float) -> None:
        """Readiness: poll PING with a deadline (not a fixed sleep)."""
        deadline = time.monotonic() + deadline_seconds
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}; "
                                       f"see {self.directory / 'redis.log'}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass  # still loading or not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} not ready in "
                                       f"{deadline_seconds}s")
                time.sleep(0.01)
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL: a crash (with ``durable`` every acknowledged write is in the AOF)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()


def _start_private(directory: Path, *, durable: bool = False) -> RedisServer:
    last: Exception | None = None
    for _ in range(3):  # the free port may be taken between bind() and redis-server's listen
        server = RedisServer(directory, durable=durable)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            server.stop()
            last = exc
    raise RuntimeError(f"could not start a private redis-server: {last}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get(ENV_URL)
    if url:
        try:
            probe = redis.Redis.from_url(url, socket_connect_timeout=2,
                                         retry=Retry(NoBackoff(), 0))
            probe.ping()
            probe.close()
        except redis.RedisError as exc:
            _unavailable(f"{ENV_URL}={url} does not answer PING ({exc})")
        yield url
        return
    if SERVER_BINARY is None:
        _unavailable(f"no redis-server binary on PATH and {ENV_URL} is not set")
    try:
        server = _start_private(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable raises
    try:
        yield server.url
    finally:
        server.stop()


def drop_namespace(client: redis.Redis, namespace: str) -> None:
    """Delete every key whose name starts with ``namespace`` (the test's unique namespace and
    namespaces derived from it, ``<namespace>-<suffix>``), and nothing else."""
    pattern = "".join(f"[{c}]" if c in "*?[]\\" else c for c in namespace) + "*"
    batch: list[Any] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def unique_namespace() -> str:
    return f"itest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    ns = unique_namespace()
    yield ns
    client = redis.Redis.from_url(redis_url)
    try:
        drop_namespace(client, ns)
    finally:
        client.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def store(client: redis.Redis, namespace: str) -> RedisStore:
    return RedisStore(client, namespace)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start extra private servers (e.g. durable ones a test restarts); all stopped after."""
    if SERVER_BINARY is None:
        reason = "needs the redis-server binary (a test that restarts its own server)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; in CI a missing Redis is a failure")
        pytest.skip(reason)
    servers: list[RedisServer] = []

    def make(*, durable: bool = False) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = _start_private(directory, durable=durable)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


class CommandLog:
    """What a counting client sent: round trips (socket writes) and command names."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.commands: Counter[str] = Counter()

    def reset(self) -> None:
        self.round_trips = 0
        self.commands.clear()


def command_names(packed: Any) -> list[str]:
    """The names of the commands in what a connection sends (RESP arrays of bulk strings,
    as one buffer or a list of chunks)."""
    chunks = [packed] if isinstance(packed, (bytes, bytearray, memoryview)) else packed
    data = b"".join(bytes(chunk) for chunk in chunks)
    names, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 1] == b"*", f"not a RESP array at {pos}: {data[pos:pos + 20]!r}"
        end = data.index(b"\r\n", pos)
        count, pos = int(data[pos + 1:end]), end + 2
        for k in range(count):
            end = data.index(b"\r\n", pos)
            size = int(data[pos + 1:end])
            if k == 0:
                names.append(data[end + 2:end + 2 + size].decode().upper())
            pos = end + 2 + size + 2
    return names


def counting_client(url: str) -> tuple[redis.Redis, CommandLog]:
    """A client whose connections count every round trip (one ``send_packed_command`` per
    single command or per pipeline, each followed by reading its replies) and the commands
    in it, read off the bytes sent (whichever layer packed them)."""
    log = CommandLog()

    class CountingConnection(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            log.round_trips += 1
            log.commands.update(command_names(command))
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool), log


@pytest.fixture
def counting(redis_url: str) -> Iterator[tuple[redis.Redis, CommandLog]]:
    c, log = counting_client(redis_url)
    yield c, log
    c.close()


# ---- worker threads driving a Kernel from a RedisStreamsDispatcher ----------------------------

TRANSIENT = (redis.ConnectionError, redis.TimeoutError)


class Workers:
    """``count`` threads, each with its own consumer: receive -> claim -> run -> complete ->
    ack. With ``resilient`` every step is retried after connection errors with the same
    arguments (same attempt id), the way a production worker retries; ``completions`` records,
    per task, the outcome of every completion call (``'error'`` when it raised)."""

    def __init__(self, kernel: Any, make_source: Callable[[int], Any],
                 behaviour: Callable[[Any], list[Any]], count: int = 4, *,
                 resilient: bool = False) -> None:
        import threading

        self.kernel = kernel
        self.make_source = make_source
        self.behaviour = behaviour
        self.resilient = resilient
        self.stop_event = threading.Event()
        self.completions: dict[str, list[str]] = {}
        self.claims_lost = 0
        self.errors: list[BaseException] = []
        self.transient_errors = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._main, args=(i,), daemon=True)
                        for i in range(count)]

    def start(self) -> Workers:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _retry(self, step: Callable[[], Any], on_error: Callable[[], None] | None = None, *,
               finish: bool = False) -> Any:
        """``finish``: the step's outcome must be known even once the workers are stopping
        (a completion whose reply was lost may already have ended the run, and the stop
        follows at once); it is retried for up to 10 s after the stop."""
        give_up: float | None = None
        while True:
            try:
                return step()
            except TRANSIENT:
                if not self.resilient:
                    raise
                with self._lock:
                    self.transient_errors += 1
                if on_error is not None:
                    on_error()
                if self.stop_event.wait(0.02):  # reconnect back-off; ends early on stop
                    if not finish:
                        raise
                    give_up = give_up or time.monotonic() + 10
                    if time.monotonic() > give_up:
                        raise
                    time.sleep(0.02)  # back-off only: the stop event no longer waits

    def _main(self, index: int) -> None:
        try:
            source = self.make_source(index)
            while not self.stop_event.is_set():
                deliveries = self._retry(lambda: source.receive(8, 0.2))
                for delivery in deliveries:
                    self._run_one(f"w{index}", source, delivery)
            self._retry(source.flush)  # the acks buffered since the last receive
        except TRANSIENT:
            if not self.stop_event.is_set():
                raise
        except BaseException as exc:  # surfaced by the test through .errors
            self.errors.append(exc)

    def _run_one(self, name: str, source: Any, delivery: Any) -> None:
        ref = delivery.ref
        attempt = uuid.uuid4().hex
        claim = self._retry(lambda: self.kernel.claim_task(ref.run_id, ref.task_id,
                                                           worker=name, attempt_id=attempt))
        if claim is None:
            with self._lock:
                self.claims_lost += 1
            self._retry(lambda: source.ack([delivery]))
            return
        outputs = self.behaviour(claim.input)
        record = self.completions.setdefault(f"{ref.run_id}/{ref.task_id}", [])

        def failed() -> None:
            record.append("error")

        transition = self._retry(lambda: self.kernel.on_task_complete(
            ref.run_id, ref.task_id, attempt, outputs), failed, finish=True)
        record.append(transition.outcome)
        self._retry(lambda: source.ack([delivery]))


@pytest.fixture
def make_workers() -> Iterator[Callable[..., Workers]]:
    made: list[Workers] = []

    def make(*args: Any, **kwargs: Any) -> Workers:
        workers = Workers(*args, **kwargs)
        made.append(workers)
        return workers

    yield make
    for workers in made:
        workers.stop()
