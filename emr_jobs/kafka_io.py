"""Production I/O: Spark's Kafka source and sink on Amazon MSK with IAM authentication.

Only option dictionaries are built here, so they are unit-tested without a cluster. The Kafka
connector and the MSK IAM login module are not on the EMR Serverless image's classpath: the job
run asks for ``SPARK_PACKAGES`` (``spark.jars.packages``; ``stacks.start_job`` does), which Spark
resolves with their dependencies from Maven Central at start (see docs/spark-job.md).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

from margin_risk import names

# Maven coordinates for spark.jars.packages on EMR Serverless emr-7.10.0 (Spark 3.5.5, Scala 2.12).
# Spark's Ivy resolution adds their dependencies (spark-token-provider-kafka, kafka-clients,
# commons-pool2). The one list: stacks.start_job submits exactly these.
SPARK_PACKAGES = (
    "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.5",
    "software.amazon.msk:aws-msk-iam-auth:2.3.0",
)

MSK_IAM_OPTIONS: Dict[str, str] = {
    "kafka.security.protocol": "SASL_SSL",
    "kafka.sasl.mechanism": "AWS_MSK_IAM",
    "kafka.sasl.jaas.config": "software.amazon.msk.auth.iam.IAMLoginModule required;",
    "kafka.sasl.client.callback.handler.class": (
        "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
    ),
}

SOURCE_TOPICS = names.MARGIN_JOB_TOPICS


def kafka_source_options(
    bootstrap: str,
    topics: Iterable[str] = SOURCE_TOPICS,
    iam: bool = True,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: Optional[int] = None,
) -> Dict[str, str]:
    """Options for ``spark.readStream.format("kafka")``.

    failOnDataLoss stays true: a gap in the input (retention expiry while the job was down) must
    stop the job loudly rather than silently skip fills. Headers are included so the correlation
    id of an input can be traced.
    """
    opts = {
        "kafka.bootstrap.servers": bootstrap,
        "subscribe": ",".join(topics),
        "startingOffsets": starting_offsets,
        "includeHeaders": "true",
        "failOnDataLoss": "true",
    }
    if max_offsets_per_trigger is not None:
        opts["maxOffsetsPerTrigger"] = str(max_offsets_per_trigger)
    if iam:
        opts.update(MSK_IAM_OPTIONS)
    return opts


def kafka_sink_options(bootstrap: str, iam: bool = True) -> Dict[str, str]:
    """Options for ``DataFrame.write.format("kafka")``: the frame carries ``topic``, ``key``,
    ``value`` and ``headers`` columns, so one write serves every output topic. Idempotent
    producer and acks=all so a retried write never reorders or half-writes a partition."""
    opts = {
        "kafka.bootstrap.servers": bootstrap,
        "kafka.acks": "all",
        "kafka.enable.idempotence": "true",
    }
    if iam:
        opts.update(MSK_IAM_OPTIONS)
    return opts
