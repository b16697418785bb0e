"""The local event source mapping behaves like Lambda's MSK mapping where correctness depends on it."""

import base64
import json
from collections import Counter

import pytest
from confluent_kafka import Producer

from margin_risk import names
from margin_risk.tools.local.esm import LocalEventSourceMapping, failed_offsets
from margin_risk.tools.local.kafka_broker import start_broker


@pytest.fixture(scope="module")
def broker():
    b = start_broker(topics=names.RESULT_TOPICS, partitions=2)
    yield b
    b.stop()


class RecordingHandler:
    """Fails chosen offsets a number of times, like a handler hitting a transient fault."""

    def __init__(self, fail_times: dict[int, int]):
        self.fail_times = dict(fail_times)
        self.seen: Counter[tuple[str, int, int]] = Counter()
        self.batches: list[int] = []
        self.values: list[dict] = []

    def __call__(self, event, context):
        assert event["eventSource"] == "aws:kafka"
        assert context.get_remaining_time_in_millis() > 0
        failures = []
        n = 0
        for tp, records in event["records"].items():
            for r in records:
                n += 1
                assert tp == f"{r['topic']}-{r['partition']}"
                self.seen[(r["topic"], r["partition"], r["offset"])] += 1
                body = json.loads(base64.b64decode(r["value"]))
                headers = {k: bytes(v).decode() for h in r["headers"] for k, v in h.items()}
                assert headers[names.HEADER_CORRELATION_ID] == body["correlation_id"]
                self.values.append(body)
                i = body["i"]
                if self.fail_times.get(i, 0) > 0:
                    self.fail_times[i] -= 1
                    failures.append({"itemIdentifier": {"partition": tp, "offset": r["offset"]}})
        self.batches.append(n)
        return {"batchItemFailures": failures}


class Sink:
    def __init__(self):
        self.records = []

    def send(self, records, reason):
        self.records.extend(records)


def test_batches_retries_and_on_failure_destination(broker):
    # Given 250 margin results keyed by 20 accounts over 2 partitions
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(250):
        body = {"i": i, "account_id": f"A{i % 20}", "correlation_id": f"c{i}"}
        p.produce(names.TOPIC_MARGIN_CALC, key=body["account_id"], value=json.dumps(body),
                  headers={names.HEADER_CORRELATION_ID: body["correlation_id"]})  # fmt: skip
    p.flush(10)
    # record 17 fails twice (transient), record 42 always fails (poison)
    handler = RecordingHandler({17: 2, 42: 10_000})
    sink = Sink()
    esm = LocalEventSourceMapping(broker.bootstrap, handler, topics=[names.TOPIC_MARGIN_CALC],
                                  batch_size=100, window_seconds=0.2, max_retries=3,
                                  on_failure=sink)  # fmt: skip
    try:
        esm.drain(idle_timeout=30)
    finally:
        esm.close()
    # Then every record was delivered, batches never exceed the batch size,
    delivered = {v["i"] for v in handler.values}
    assert delivered == set(range(250))
    assert max(handler.batches) <= 100
    # the transient failure was re-delivered until it succeeded (later offsets of its partition
    # come again with it, as with the managed mapping, so count at least),
    assert Counter(v["i"] for v in handler.values)[17] >= 3
    # and the poison record went to the on-failure destination after 1 + 3 deliveries.
    assert [json.loads(base64.b64decode(r["value"]))["i"] for r in sink.records] == [42]
    assert Counter(v["i"] for v in handler.values)[42] >= 4
    assert esm.stats.sent_to_on_failure == 1


def test_failed_offsets_takes_the_lowest_per_partition():
    resp = {"batchItemFailures": [
        {"itemIdentifier": {"partition": "margin.calc.v1-1", "offset": 9}},
        {"itemIdentifier": {"partition": "margin.calc.v1-1", "offset": 4}},
        {"itemIdentifier": {"partition": "stress.beta_spy.v1-0", "offset": 2}},
    ]}  # fmt: skip
    assert failed_offsets(resp) == {("margin.calc.v1", 1): 4, ("stress.beta_spy.v1", 0): 2}
    assert failed_offsets(None) == {}
