"""MSK IAM-auth ARNs and least-privilege grants for Kafka clients (cluster, topic and group scoped).

MSK IAM access control authorizes Kafka operations (`kafka-cluster:*` actions) against ARNs of
the cluster, its topics and its consumer groups, shaped
`arn:<partition>:kafka:<region>:<account>:<kind>/<cluster-name>/<cluster-uuid>/<name>`.
The cluster UUID is the last segment of the cluster ARN, so the ARNs are built from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam


@dataclass(frozen=True)
class KafkaClusterRef:
    """What a client stack needs to know about the cluster to scope its IAM policies."""

    cluster_arn: str
    cluster_name: str

    def _resource_arn(self, kind: str, name: str) -> str:
        uuid = cdk.Fn.select(2, cdk.Fn.split("/", self.cluster_arn))
        return cdk.Fn.join(
            "",
            [
                "arn:",
                cdk.Aws.PARTITION,
                ":kafka:",
                cdk.Aws.REGION,
                ":",
                cdk.Aws.ACCOUNT_ID,
                f":{kind}/{self.cluster_name}/",
                uuid,
                f"/{name}",
            ],
        )

    def topic_arn(self, topic: str) -> str:
        return self._resource_arn("topic", topic)

    def group_arn(self, group: str) -> str:
        """A consumer-group ARN; `group` may end in `*` to cover a prefix."""
        return self._resource_arn("group", group)


def grant_connect(grantee: iam.IGrantable, cluster: KafkaClusterRef) -> None:
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kafka-cluster:Connect"],
            resources=[cluster.cluster_arn],
        )
    )


def grant_consume(
    grantee: iam.IGrantable,
    cluster: KafkaClusterRef,
    topics: Iterable[str],
    groups: Iterable[str],
) -> None:
    """Read `topics` as a member of `groups` (names or `prefix*`)."""
    grant_connect(grantee, cluster)
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"],
            resources=[cluster.topic_arn(t) for t in topics],
        )
    )
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"],
            resources=[cluster.group_arn(g) for g in groups],
        )
    )


def grant_produce(grantee: iam.IGrantable, cluster: KafkaClusterRef, topics: Iterable[str]) -> None:
    """Write `topics` with an idempotent producer (the default of modern clients)."""
    grant_connect(grantee, cluster)
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kafka-cluster:WriteDataIdempotently"],
            resources=[cluster.cluster_arn],
        )
    )
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
            resources=[cluster.topic_arn(t) for t in topics],
        )
    )
