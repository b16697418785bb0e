"""The local tansu broker: starts on a free port, creates every topic, round-trips records."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from margin_risk import names
from margin_risk.tools.local.kafka_broker import start_broker

pytestmark = pytest.mark.integration


def test_broker_creates_all_topics_and_round_trips_keyed_records_with_headers() -> None:
    # Given a fresh broker with 3 partitions per topic
    with start_broker(partitions=3) as broker:
        md = broker.admin().list_topics(timeout=5)
        assert set(names.ALL_TOPICS) <= set(md.topics)
        assert len(md.topics[names.TOPIC_FILLS].partitions) == 3

        # When a record with a correlation header is produced to partition 2
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
        producer.produce(
            names.TOPIC_FILLS,
            key=b"ACC1",
            value=b'{"fill_id": "F1"}',
            partition=2,
            headers=[(names.HEADER_CORRELATION_ID, b"corr-1")],
        )
        assert producer.flush(10) == 0

        # Then a manually assigned consumer reads it back with key, value and header
        consumer = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": "t", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(names.TOPIC_FILLS, 2, 0)])
        msgs = consumer.consume(10, timeout=5)
        consumer.close()
        assert [(m.key(), m.value(), m.offset()) for m in msgs] == [
            (b"ACC1", b'{"fill_id": "F1"}', 0)
        ]
        assert msgs[0].headers() == [(names.HEADER_CORRELATION_ID, b"corr-1")]
    # And stop() ends the process
    assert not broker.alive()


def test_create_topics_is_idempotent() -> None:
    with start_broker(topics=(names.TOPIC_PRICES,), partitions=1) as broker:
        broker.create_topics([names.TOPIC_PRICES, names.TOPIC_CASH], partitions=1)
        topics = broker.admin().list_topics(timeout=5).topics
        assert names.TOPIC_PRICES in topics and names.TOPIC_CASH in topics
