"""The desk command end to end: the caller's identity from STS (the embedded moto server), the
action published to desk.actions.v1 on the local tansu broker, read back and applied by the same
enforcement service the Lambda runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from confluent_kafka import Consumer, TopicPartition

from margin_risk import names
from margin_risk.adapters.kafka_publisher import producer_config
from margin_risk.enforcement import AccountState, replay
from margin_risk.tools.cli import main
from margin_risk.tools.desk import action_id, build_action
from margin_risk.tools.local.kafka_broker import start_broker
from margin_risk.usecase.decode import decode
from margin_risk.usecase.records import Coordinate, InboundRecord, ValidRecord
from tests.factories import long_book, margin_calc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker():
    with start_broker(topics=(names.TOPIC_DESK_ACTIONS,), partitions=1) as b:
        yield b


def read_topic(bootstrap: str) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(names.TOPIC_DESK_ACTIONS, 0, 0)])
    msgs = c.consume(50, timeout=5)
    c.close()
    return msgs


def test_extend_and_waive_publish_signed_actions_the_enforcement_applies(
    aws_endpoint, broker, capsys
):
    # Given an account with an open call (deficiency 1,250 at $25) a minute ago
    now = datetime.now(UTC)
    call = margin_calc("ACC_DESK", -60, -20_000.0, long_book(25.0))
    call = call.model_copy(update={"timestamp": now - timedelta(minutes=1)})
    until = (now + timedelta(days=4)).replace(microsecond=0)
    # When the desk extends it and later waives it from the command line
    common = ["--bootstrap", broker.bootstrap, "--auth", "none"]
    code = main(
        ["desk", "extend", "ACC_DESK", "--until", until.isoformat(), "--reason", "wire", *common]
    )
    assert code == 0
    code = main(["desk", "waive", "ACC_DESK", "--reason", "fee error", *common])
    assert code == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Then both records are on desk.actions.v1, keyed by account, signed by the STS identity
    msgs = read_topic(broker.bootstrap)
    assert [m.key() for m in msgs] == [b"ACC_DESK", b"ACC_DESK"]
    me = boto3.client("sts").get_caller_identity()["Arn"]
    records = [
        decode(InboundRecord(Coordinate(names.TOPIC_DESK_ACTIONS, 0, m.offset()), m.value()))
        for m in msgs
    ]
    assert all(isinstance(r, ValidRecord) for r in records)
    actions = [r.event for r in records]
    assert [a.operator for a in actions] == [me, me]
    assert [a.action for a in actions] == ["EXTEND_CALL", "WAIVE_CALL"]
    assert actions[0].until == until
    assert [a.action_id for a in actions] == [p["action_id"] for p in printed]
    # And the id is the content's: the same action built again has the same id
    a = actions[0]
    assert a.action_id == action_id(
        a.account_id, a.action, a.until, a.operator, a.reason, a.timestamp
    )
    # And the enforcement applies them in order: extended, then waived
    r = replay([call, *actions], states={"ACC_DESK": AccountState.new("ACC_DESK")})
    assert [d.event_type for d in r.decisions] == [
        "MARGIN_CALL_ISSUED", "MARGIN_CALL_EXTENDED", "MARGIN_CALL_WAIVED",
    ]  # fmt: skip
    assert r.decisions[1].details.operator == me


def test_an_until_in_the_past_is_refused_and_nothing_is_published(aws_endpoint, broker, capsys):
    before = len(read_topic(broker.bootstrap))
    code = main(
        ["desk", "extend", "ACC_X", "--until", "2020-01-01T00:00:00Z", "--reason", "r",
         "--bootstrap", broker.bootstrap, "--auth", "none"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.startswith("error: --until 2020-01-01T00:00:00Z is not after now")
    assert len(read_topic(broker.bootstrap)) == before


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["desk", "extend", "ACC_X", "--until", "tomorrow", "--reason", "r"], "--until: timestamp"),
        (["desk", "waive", "ACC_X", "--reason", ""], "reason"),
        (["desk", "waive", "ACC_X", "--reason", "r", "--bootstrap", ""], "no Kafka bootstrap"),
    ],
)
def test_bad_desk_input_is_one_line(aws_endpoint, capsys, monkeypatch, argv, why):
    monkeypatch.delenv("MR_DESK_BOOTSTRAP", raising=False)
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert why in err and err.count("\n") == 1


def test_an_unreachable_broker_is_one_line(aws_endpoint, capsys, monkeypatch):
    monkeypatch.setattr("margin_risk.tools.desk.DELIVERY_TIMEOUT_S", 1.0)
    code = main(
        ["desk", "waive", "ACC_X", "--reason", "r", "--bootstrap", "127.0.0.1:9", "--auth", "none"]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.startswith("error: desk.actions.v1 at 127.0.0.1:9:")


def test_on_aws_the_producer_signs_with_msk_iam(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    conf = producer_config("b-1.msk:9098", "iam")
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    assert callable(conf["oauth_cb"])


def test_build_action_is_deterministic_and_validated():
    t = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)
    a = build_action("A", "WAIVE_CALL", operator="arn:x", reason="r", now=t)
    b = build_action("A", "WAIVE_CALL", operator="arn:x", reason="r", now=t)
    c = build_action("A", "WAIVE_CALL", operator="arn:x", reason="other", now=t)
    assert a == b and a.action_id != c.action_id
    assert a.action_id.startswith("desk-") and len(a.action_id) == 37
