"""spark-submit entry point of the margin job on EMR Serverless (``mode: STREAMING``).

Reads fills/prices/cash/betas and the house requirements from MSK, runs ``process_batch`` per
micro-batch through ``foreachBatch``, writes margin.calc.v1, stress.beta_spy.v1 and rejected.v1
back to MSK and, with ``--history-dir``, archives the results (the margin history).
Spark's checkpoint (offsets) and the job's own state store live under ``--checkpoint-dir``;
EMR Serverless restarts a failed streaming run from that checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from pyspark.sql import DataFrame, SparkSession

from emr_jobs.batch import DEDUPE_HORIZON_HOURS, JobContext, Sink, process_batch
from emr_jobs.history import HistoryWriter
from emr_jobs.kafka_io import kafka_sink_options, kafka_source_options
from emr_jobs.metrics import JobLog, MetricsWriter
from emr_jobs.session import SESSION_CONF
from emr_jobs.state import StateStore
from margin_risk.params import MarginParams


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="margin-job")
    ap.add_argument("--bootstrap", required=True, help="MSK bootstrap brokers (IAM, port 9098)")
    ap.add_argument("--checkpoint-dir", required=True, help="s3://bucket/prefix for state")
    ap.add_argument("--params-json", default=None, help="MarginParams.to_json() of the house")
    ap.add_argument("--trigger-seconds", type=float, default=5.0)
    ap.add_argument("--shuffle-partitions", type=int, default=8)
    ap.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    ap.add_argument("--starting-offsets", default="earliest")
    ap.add_argument(
        "--dedupe-horizon-hours",
        type=int,
        default=DEDUPE_HORIZON_HOURS,
        help="how long applied fill/cash ids are remembered (event time); older ones are rejected",
    )
    ap.add_argument(
        "--history-dir",
        default=None,
        help="s3://bucket/prefix of the margin history (margin_risk.archive); none: not archived",
    )
    ap.add_argument("--no-iam", action="store_true", help="plaintext Kafka (tests only)")
    return ap.parse_args(argv)


def kafka_sink(bootstrap: str, iam: bool) -> Sink:
    """A Sink writing the outputs frame (topic, key, value, headers) to Kafka in one batch write."""
    opts = kafka_sink_options(bootstrap, iam)

    def sink(outputs: DataFrame, batch_id: int) -> None:
        outputs.write.format("kafka").options(**opts).save()

    return sink


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    params = MarginParams.from_json(args.params_json) if args.params_json else MarginParams()
    builder = SparkSession.builder.appName("margin-risk-margin-job").config(
        "spark.sql.shuffle.partitions", str(args.shuffle_partitions)
    )
    for k, v in SESSION_CONF.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    root = args.checkpoint_dir.rstrip("/")
    ctx = JobContext(
        params=params,
        state=StateStore(spark, f"{root}/state"),
        sink=kafka_sink(args.bootstrap, not args.no_iam),
        metrics=MetricsWriter(None),  # EMF to the driver's stdout -> CloudWatch Logs
        dedupe_horizon_hours=args.dedupe_horizon_hours,
        log=JobLog(None),  # structured lines to the driver's stdout -> CloudWatch Logs
        history=(
            HistoryWriter(spark, args.history_dir, f"{root}/state/history-staging")
            if args.history_dir
            else None
        ),
    )
    source = (
        spark.readStream.format("kafka")
        .options(
            **kafka_source_options(
                args.bootstrap,
                iam=not args.no_iam,
                starting_offsets=args.starting_offsets,
                max_offsets_per_trigger=args.max_offsets_per_trigger,
            )
        )
        .load()
    )

    def on_batch(df: DataFrame, batch_id: int) -> None:
        process_batch(spark, df, int(batch_id), ctx)

    query = (
        source.writeStream.queryName("margin-job")
        .option("checkpointLocation", f"{root}/spark-checkpoint")
        .trigger(processingTime=f"{args.trigger_seconds} seconds")
        .foreachBatch(on_batch)
        .start()
    )
    query.awaitTermination()


if __name__ == "__main__":
    main(sys.argv[1:])
