"""SparkSession construction with the settings the job relies on (UTC, small shuffles)."""

from __future__ import annotations

from pyspark.sql import SparkSession

# Timestamps are parsed and printed in UTC regardless of the host's zone.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # Wire-format JSON: NaN/Infinity literals are parsed, then rejected by validation.
    "spark.sql.json.enableExactStringParsing": "true",
    # Exact money: a decimal product keeps the sum of its operands' scales (an overflow is null,
    # never a silently rounded amount); see emr_jobs.calc.
    "spark.sql.decimalOperations.allowPrecisionLoss": "false",
    # A micro-batch compiles a few hundred generated classes; with the default cache of 100 they
    # were all recompiled by Janino every batch (measured 377 compilations per batch, 0 with this).
    "spark.sql.codegen.cache.maxEntries": "4096",
    # HotSpot never JIT-compiles a method of more than 8,000 bytecode bytes
    # (DontCompileHugeMethods), and the stage that prices positions through the kernel generates
    # one: it ran interpreted for the job's whole life. Past this size Spark compiles the stage
    # operator by operator, in methods the JIT does compile (measured: -18% CPU per micro-batch
    # on the 1M-position book).
    "spark.sql.codegen.hugeMethodLimit": "8000",
}

LOCAL_DRIVER_JAVA_OPTIONS = "-XX:+UseParallelGC"


def build_local_session(
    shuffle_partitions: int = 2, app_name: str = "margin-job-local"
) -> SparkSession:
    """local[2] session for tests, the benchmark and the demo: no UI, few shuffle partitions."""
    builder = (
        SparkSession.builder.master("local[2]")
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", "2")
        # Local micro-batches are tiny: AQE's per-stage re-planning costs more than it saves
        # (measured ~30% slower per batch). EMR keeps its default (on) for real volumes.
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.driver.memory", "2g")
        # The whole local pipeline shares a few cores, so the driver JVM's CPU per micro-batch is
        # what bounds latency. The throughput collector spends less of it than G1 on these short-
        # lived plan and row objects (JVM CPU per warm batch, measured side by side).
        .config("spark.driver.extraJavaOptions", LOCAL_DRIVER_JAVA_OPTIONS)
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
    )
    for k, v in SESSION_CONF.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
