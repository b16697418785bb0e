"""Streaming (MSK + topics), processing (EMR Serverless) and network stacks."""

from __future__ import annotations

import base64
import json

import pytest

import emr_jobs
from margin_risk import names
from stacks.streaming import KAFKA_IAM_PORT
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra
ENVS = ("dev", "prod")


@pytest.mark.parametrize("env", ENVS)
def test_msk_cluster_takes_iam_auth_over_tls_only(synth: Synth, env: str) -> None:
    cfg = synth.configs[env].msk
    _, cluster = synth.one(env, "Streaming", "AWS::MSK::Cluster")
    p = cluster["Properties"]
    assert p["ClusterName"] == names.MSK_CLUSTER
    assert p["ClientAuthentication"] == {
        "Sasl": {"Iam": {"Enabled": True}},
        "Unauthenticated": {"Enabled": False},
    }
    assert p["EncryptionInfo"]["EncryptionInTransit"] == {"ClientBroker": "TLS", "InCluster": True}
    assert p["EncryptionInfo"]["EncryptionAtRest"]["DataVolumeKMSKeyId"]
    assert p["LoggingInfo"]["BrokerLogs"]["CloudWatchLogs"]["Enabled"] is True
    assert p["NumberOfBrokerNodes"] == cfg.broker_count
    assert p["BrokerNodeGroupInfo"]["InstanceType"] == cfg.broker_instance_type
    assert p["BrokerNodeGroupInfo"]["StorageInfo"]["EBSStorageInfo"]["VolumeSize"] == cfg.volume_gb
    # AWS::MSK::Topic needs Kafka >= 3.6 on a provisioned cluster.
    major, minor = (int(x) for x in p["KafkaVersion"].split(".")[:2])
    assert (major, minor) >= (3, 6)
    _, conf = synth.one(env, "Streaming", "AWS::MSK::Configuration")
    assert "auto.create.topics.enable=false" in conf["Properties"]["ServerProperties"]


@pytest.mark.parametrize("env", ENVS)
def test_every_spec_topic_is_created_with_partitions_and_retention_from_config(
    synth: Synth, env: str
) -> None:
    cfg = synth.configs[env].msk
    cluster_id, _ = synth.one(env, "Streaming", "AWS::MSK::Cluster")
    topics = {
        t["Properties"]["TopicName"]: t["Properties"]
        for t in synth.resources(env, "Streaming", "AWS::MSK::Topic").values()
    }
    assert set(topics) == set(names.ALL_TOPICS)
    for name, t in topics.items():
        assert t["ClusterArn"] == {"Fn::GetAtt": [cluster_id, "Arn"]}
        assert t["PartitionCount"] == cfg.topic(name).partitions
        assert t["ReplicationFactor"] == cfg.replication_factor
        configs = json.loads(base64.b64decode(t["Configs"]))
        assert configs["retention.ms"] == str(cfg.topic(name).retention_hours * 3_600_000)
        assert configs["min.insync.replicas"] == str(cfg.min_insync_replicas)
    # prod keeps decisions longer than inputs (from cdk.json)
    if env == "prod":
        assert (
            cfg.topic(names.TOPIC_MARGIN_CALLS).retention_hours
            > cfg.topic(names.TOPIC_FILLS).retention_hours
        )


def test_brokers_admit_only_the_client_group_and_themselves(synth: Synth) -> None:
    groups = synth.resources("dev", "Streaming", "AWS::EC2::SecurityGroup")
    ingress = synth.resources("dev", "Streaming", "AWS::EC2::SecurityGroupIngress")
    rules = [i["Properties"] for i in ingress.values()]
    assert rules and all(r["FromPort"] == r["ToPort"] == KAFKA_IAM_PORT for r in rules)
    assert all("CidrIp" not in r for r in rules)
    for g in groups.values():
        for r in g["Properties"].get("SecurityGroupIngress", []):
            assert r.get("CidrIp") != "0.0.0.0/0"


@pytest.mark.parametrize("env", ENVS)
def test_emr_application_is_pinned_auto_started_stopped_and_capped(synth: Synth, env: str) -> None:
    cfg = synth.configs[env].emr
    _, app = synth.one(env, "Processing", "AWS::EMRServerless::Application")
    p = app["Properties"]
    assert p["ReleaseLabel"] == emr_jobs.EMR_RELEASE_LABEL
    major, minor = (int(x) for x in p["ReleaseLabel"].removeprefix("emr-").split(".")[:2])
    assert (major, minor) >= (7, 1), "STREAMING job runs need emr-7.1.0 or later"
    assert p["Type"] == "SPARK"
    assert p["AutoStartConfiguration"] == {"Enabled": True}
    assert p["AutoStopConfiguration"] == {
        "Enabled": True,
        "IdleTimeoutMinutes": cfg.idle_timeout_minutes,
    }
    assert p["MaximumCapacity"] == {
        "Cpu": cfg.max_cpu,
        "Memory": cfg.max_memory,
        "Disk": cfg.max_disk,
    }
    assert p["NetworkConfiguration"]["SubnetIds"]
    logging = p["MonitoringConfiguration"]["CloudWatchLoggingConfiguration"]
    assert logging["Enabled"] is True


def test_job_role_trusts_emr_serverless_of_this_account_only(synth: Synth) -> None:
    roles = synth.resources("dev", "Processing", "AWS::IAM::Role")
    (role,) = roles.values()
    (stmt,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert stmt["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert stmt["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_job_role_reads_inputs_writes_results_and_nothing_else_on_kafka(synth: Synth) -> None:
    policies = synth.resources("dev", "Processing", "AWS::IAM::Policy")
    statements = [
        s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]

    def topics_for(action: str) -> set[str]:
        found = set()
        for s in statements:
            if action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]):
                for r in s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]:
                    last = r["Fn::Join"][1][-1] if isinstance(r, dict) else r
                    found.add(str(last).rsplit("/", 1)[-1])
        return found

    assert topics_for("kafka-cluster:ReadData") == set(names.MARGIN_JOB_TOPICS)
    assert topics_for("kafka-cluster:WriteData") == {*names.RESULT_TOPICS, names.TOPIC_REJECTED}


def test_job_code_is_uploaded_as_assets(synth: Synth) -> None:
    outputs = synth.template("dev", "Processing")["Outputs"]
    for key in ("ApplicationId", "JobRoleArn", "EntryPointUri", "PyFilesUri", "CheckpointUri"):
        assert key in outputs
    manifest = json.loads((synth.outdir / "MarginRisk-dev-Processing.assets.json").read_text())
    packaging = sorted(f["source"]["packaging"] for f in manifest["files"].values())
    paths = [f["source"]["path"] for f in manifest["files"].values()]
    assert packaging.count("file") >= 3  # entry point, pyfiles zip, template
    assert any(p.endswith(".zip") for p in paths) and any(p.endswith(".py") for p in paths)


@pytest.mark.parametrize("env", ENVS)
def test_vpc_has_private_subnets_gateway_endpoints_and_flow_logs(synth: Synth, env: str) -> None:
    endpoints = synth.resources(env, "Network", "AWS::EC2::VPCEndpoint").values()
    services = set()
    for e in endpoints:
        assert e["Properties"]["VpcEndpointType"] == "Gateway"
        parts = e["Properties"]["ServiceName"]["Fn::Join"][1]
        services.add(parts[-1].rsplit(".", 1)[-1])
    assert services == {"s3", "dynamodb"}
    subnets = synth.resources(env, "Network", "AWS::EC2::Subnet").values()
    private = [s for s in subnets if s["Properties"]["MapPublicIpOnLaunch"] is False]
    assert len(private) == synth.configs[env].network.max_azs
    assert len(synth.resources(env, "Network", "AWS::EC2::NatGateway")) == (
        synth.configs[env].network.nat_gateways
    )
    assert synth.resources(env, "Network", "AWS::EC2::FlowLog")
