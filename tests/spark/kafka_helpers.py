"""Produce input records to and read results from the local broker in tests."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from margin_risk.tools.local.kafka_broker import Broker


def produce(broker: Broker, topic: str, key: str, value: dict[str, Any] | str) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    body = value if isinstance(value, str) else json.dumps(value)
    p.produce(topic, key=key.encode(), value=body.encode())
    assert p.flush(10) == 0


def produce_many(broker: Broker, records: list[tuple[str, str, dict[str, Any] | str]]) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for topic, key, value in records:
        body = value if isinstance(value, str) else json.dumps(value)
        p.produce(topic, key=key.encode(), value=body.encode())
    assert p.flush(10) == 0


def read_all(
    broker: Broker, topic: str, partitions: int = 2
) -> list[tuple[str, dict[str, Any], dict[str, bytes]]]:
    """Every record of a topic: (key, JSON value, headers), per partition in offset order."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "test-reader"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    idle = 0
    while idle < 3:
        msgs = c.consume(1000, timeout=0.5)
        if not msgs:
            idle += 1
        for m in msgs:
            if m.error() is None:
                out.append(
                    (
                        (m.key() or b"").decode(),
                        json.loads(m.value() or b"{}", parse_float=Decimal),
                        dict(m.headers() or []),
                        m.partition(),
                        m.offset(),
                    )
                )
    c.close()
    out.sort(key=lambda r: (r[3], r[4]))
    return [(k, v, h) for k, v, h, _, _ in out]
