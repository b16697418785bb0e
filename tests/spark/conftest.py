"""One local[2] SparkSession for every Spark test (start-up costs seconds; share it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from emr_jobs.session import build_local_session
from margin_risk.local.kafka_broker import Broker, start_broker


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_local_session(shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One local Kafka-protocol broker for the streaming tests (tests use their own topics'
    partitions through fresh state dirs; see ``fresh_broker`` for isolation)."""
    with start_broker(partitions=2) as b:
        yield b
