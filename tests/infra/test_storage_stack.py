"""Storage and analytics stack: tables, the write-once audit bucket, Glue projection, Athena."""

from __future__ import annotations

import pytest

from margin_risk import names
from stacks.athena_queries import NAMED_QUERIES
from stacks.storage import AUDIT_COLUMNS, JSON_SERDE
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra
ENVS = ("dev", "prod")


def _audit_bucket(synth: Synth, env: str) -> dict:
    buckets = synth.resources(env, "Storage", "AWS::S3::Bucket")
    (props,) = [b["Properties"] for b in buckets.values() if "ObjectLockEnabled" in b["Properties"]]
    return props


@pytest.mark.parametrize("env", ENVS)
def test_tables_have_the_contract_keys_pitr_and_on_demand(synth: Synth, env: str) -> None:
    tables = {
        t["Properties"]["TableName"]: t
        for t in synth.resources(env, "Storage", "AWS::DynamoDB::Table").values()
    }
    state = tables[names.ACCOUNT_STATE_TABLE]["Properties"]
    assert state["KeySchema"] == [
        {"AttributeName": "account_id", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {a["AttributeName"]: a["AttributeType"] for a in state["AttributeDefinitions"]} == {
        "account_id": "S",
        "sk": "S",
    }
    idem = tables[names.IDEMPOTENCY_TABLE]["Properties"]
    assert idem["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert idem["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    protect = synth.configs[env].storage.deletion_protection
    assert protect is (env == "prod")
    for t in (state, idem):
        assert t["BillingMode"] == "PAY_PER_REQUEST"
        assert t["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert t["SSESpecification"]["SSEEnabled"] is True
        assert t.get("DeletionProtectionEnabled", False) is protect
    # The state table outlives the stack in prod.
    assert tables[names.ACCOUNT_STATE_TABLE]["DeletionPolicy"] == (
        "Retain" if env == "prod" else "Delete"
    )


@pytest.mark.parametrize(("env", "mode"), [("dev", "GOVERNANCE"), ("prod", "COMPLIANCE")])
def test_audit_bucket_is_object_locked_versioned_kms_and_never_expires(
    synth: Synth, env: str, mode: str
) -> None:
    cfg = synth.configs[env].storage
    b = _audit_bucket(synth, env)
    assert b["ObjectLockEnabled"] is True
    assert b["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": mode, "Days": cfg.audit_retention_days}},
    }
    assert b["VersioningConfiguration"] == {"Status": "Enabled"}
    sse = b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert b["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert b["LoggingConfiguration"]["DestinationBucketName"]
    rules = b["LifecycleConfiguration"]["Rules"]
    assert rules, "lifecycle moves audit objects to colder storage"
    for rule in rules:
        assert not {"ExpirationInDays", "ExpirationDate", "NoncurrentVersionExpiration"} & set(rule)
        assert not rule.get("ExpiredObjectDeleteMarker")
    classes = [t["StorageClass"] for r in rules for t in r.get("Transitions", [])]
    assert classes == ["STANDARD_IA", "GLACIER_IR", "DEEP_ARCHIVE"]
    bucket_ids = [
        k
        for k, v in synth.resources(env, "Storage", "AWS::S3::Bucket").items()
        if "ObjectLockEnabled" in v["Properties"]
    ]
    assert synth.template(env, "Storage")["Resources"][bucket_ids[0]]["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("env", ENVS)
def test_every_bucket_is_ssl_only(synth: Synth, env: str) -> None:
    buckets = set(synth.resources(env, "Storage", "AWS::S3::Bucket"))
    policies = synth.resources(env, "Storage", "AWS::S3::BucketPolicy").values()
    ssl_only = {
        p["Properties"]["Bucket"]["Ref"]
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny"
        and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    }
    assert ssl_only == buckets


def test_glue_table_matches_the_audit_schema_with_partition_projection(synth: Synth) -> None:
    _, table = synth.one("dev", "Storage", "AWS::Glue::Table")
    ti = table["Properties"]["TableInput"]
    assert ti["Name"] == names.AUDIT_TABLE
    assert table["Properties"]["DatabaseName"] == names.GLUE_DATABASE
    sd = ti["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == list(AUDIT_COLUMNS)
    assert dict(AUDIT_COLUMNS)["details"] == (
        "struct<deficiency:double,excess:double,equity:double,maintenance_req:double,"
        "scenario:double,reason:string>"
    )
    assert [(c["Name"], c["Type"]) for c in ti["PartitionKeys"]] == [
        ("year", "int"),
        ("month", "int"),
        ("day", "int"),
        ("hour", "int"),
    ]
    assert (
        sd["SerdeInfo"]["SerializationLibrary"]
        == JSON_SERDE
        == "org.openx.data.jsonserde.JsonSerDe"
    )
    params = ti["Parameters"]
    assert params["projection.enabled"] == "true"
    for part, rng in (("month", "1,12"), ("day", "1,31"), ("hour", "0,23")):
        assert params[f"projection.{part}.type"] == "integer"
        assert params[f"projection.{part}.range"] == rng
        # Unpadded integers, as the audit writer names its keys (month=2, not month=02).
        assert f"projection.{part}.digits" not in params
    template = params["storage.location.template"]
    joined = "".join(p if isinstance(p, str) else "<bucket>" for p in template["Fn::Join"][1])
    assert joined == ("s3://<bucket>/audit/year=${year}/month=${month}/day=${day}/hour=${hour}/")


def test_athena_workgroup_enforces_encrypted_results(synth: Synth) -> None:
    _, wg = synth.one("dev", "Storage", "AWS::Athena::WorkGroup")
    props = wg["Properties"]
    assert props["Name"] == names.ATHENA_WORKGROUP
    conf = props["WorkGroupConfiguration"]
    assert conf["EnforceWorkGroupConfiguration"] is True
    rc = conf["ResultConfiguration"]
    assert rc["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"
    assert rc["EncryptionConfiguration"]["KmsKey"]
    assert rc["OutputLocation"]
    assert (
        conf["BytesScannedCutoffPerQuery"]
        == synth.configs["dev"].storage.athena_bytes_scanned_cutoff
    )


def test_named_queries_are_the_shared_module_texts(synth: Synth) -> None:
    queries = synth.resources("dev", "Storage", "AWS::Athena::NamedQuery").values()
    deployed = {q["Properties"]["Name"]: q["Properties"] for q in queries}
    assert set(deployed) == set(NAMED_QUERIES)
    assert {
        "margin_calls_for_account",
        "events_by_type_for_day",
        "accounts_with_liquidations_in_month",
        "trace_by_correlation_id",
    } <= set(deployed)
    assert len(deployed) >= 5
    for name, q in NAMED_QUERIES.items():
        assert deployed[name]["QueryString"] == q.sql
        assert deployed[name]["Database"] == names.GLUE_DATABASE
