"""Production source/sink options (MSK with IAM) and the EMF metrics shape, without a cluster."""

from __future__ import annotations

import json
from pathlib import Path

from emr_jobs.entrypoint import parse_args
from emr_jobs.kafka_io import kafka_sink_options, kafka_source_options
from emr_jobs.metrics import MetricsWriter, batch_metrics
from margin_risk import names

BOOT = "b-1.msk.example:9098,b-2.msk.example:9098"


def test_source_options_subscribe_to_the_inputs_with_msk_iam() -> None:
    opts = kafka_source_options(BOOT, max_offsets_per_trigger=1000)
    assert opts["kafka.bootstrap.servers"] == BOOT
    assert opts["subscribe"] == "fills.v1,prices.v1,cash.v1,betas.v1,house.requirements.v1"
    assert opts["includeHeaders"] == "true"
    assert opts["failOnDataLoss"] == "true"
    assert opts["maxOffsetsPerTrigger"] == "1000"
    assert opts["kafka.security.protocol"] == "SASL_SSL"
    assert opts["kafka.sasl.mechanism"] == "AWS_MSK_IAM"
    assert opts["kafka.sasl.jaas.config"] == (
        "software.amazon.msk.auth.iam.IAMLoginModule required;"
    )
    assert opts["kafka.sasl.client.callback.handler.class"] == (
        "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
    )


def test_plaintext_options_have_no_sasl() -> None:
    assert not any("sasl" in k or "security" in k for k in kafka_source_options(BOOT, iam=False))
    sink = kafka_sink_options(BOOT, iam=False)
    assert sink == {
        "kafka.bootstrap.servers": BOOT,
        "kafka.acks": "all",
        "kafka.enable.idempotence": "true",
    }
    assert kafka_sink_options(BOOT)["kafka.sasl.mechanism"] == "AWS_MSK_IAM"


def test_entrypoint_arguments_default_to_settings() -> None:
    a = parse_args(["--bootstrap", BOOT, "--checkpoint-dir", "s3://b/p", "--trigger-seconds", "2"])
    assert (a.trigger_seconds, a.shuffle_partitions, a.no_iam) == (2.0, 8, False)


def test_emf_lines_carry_namespace_service_and_reason(tmp_path: Path) -> None:
    MetricsWriter(str(tmp_path)).write(
        batch_metrics(10, 3, 3, {"malformed_json": 2}, 1234.5, batch_id=7)
    )
    docs = [json.loads(x) for x in (tmp_path / "spark.jsonl").read_text().splitlines()]
    main, rej = docs
    cw = main["_aws"]["CloudWatchMetrics"][0]
    assert cw["Namespace"] == names.METRICS_NAMESPACE
    assert cw["Dimensions"] == [[names.DIM_SERVICE]]
    assert main[names.DIM_SERVICE] == names.SERVICE_SPARK
    assert main[names.METRIC_INPUT_RECORDS] == 10.0
    assert main[names.METRIC_SPARK_BATCH_DURATION] == 1234.5
    assert rej["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        sorted([names.DIM_REASON, names.DIM_SERVICE])
    ]
    assert rej[names.DIM_REASON] == "malformed_json" and rej[names.METRIC_RECORDS_REJECTED] == 2.0
