"""The local session's settings that the job and the benchmarks rely on."""

from __future__ import annotations

from pyspark.sql import SparkSession


def test_local_driver_runs_the_parallel_collector(spark: SparkSession) -> None:
    # The JVM options only take effect when the session launches the JVM; a G1 driver here means
    # the setting was dropped (e.g. set after start-up) and the local pipeline pays ~20% more
    # JVM CPU per micro-batch.
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    beans = jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert sorted(b.getName() for b in beans) == ["PS MarkSweep", "PS Scavenge"]
