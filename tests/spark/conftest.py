"""One local[2] SparkSession for every Spark test (start-up costs seconds; share it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from emr_jobs.session import build_local_session


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_local_session(shuffle_partitions=2)
    yield session
    session.stop()
