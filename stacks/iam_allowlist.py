"""The reviewed list of IAM wildcards and AWS managed policies this application may contain.

cdk-nag 3 reports every wildcard as its own finding (`AwsSolutions-IAM5[Resource::...]`,
`AwsSolutions-IAM4[Policy::...]`) and accepts only exact acknowledgments. Instead of scattering
opaque finding strings through the stacks, every permitted wildcard is one entry here with the
reason a security reviewer reads; `AcknowledgeReviewedWildcards` acknowledges the findings that
match an entry (and only those) after CDK has resolved cross-stack references, so any new
wildcard fails the synth until it is reviewed and added here. The infrastructure tests check the
synthesized templates against the same list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_iam as iam
from constructs import IConstruct, IValidation

# Actions that have no resource-level permissions: AWS requires Resource "*" for them.
STAR_RESOURCE_ACTIONS: frozenset[str] = frozenset(
    {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
    }
)


@dataclass(frozen=True)
class ReviewedWildcard:
    kind: str  # "Action" | "Resource" | "Policy"
    pattern: str  # regex, full match against the flattened finding text
    reason: str
    # For Resource "*": every action of the statement must be one of these.
    only_actions: frozenset[str] | None = None

    def matches(self, kind: str, text: str, actions: Iterable[str]) -> bool:
        if kind != self.kind or not re.fullmatch(self.pattern, text):
            return False
        return self.only_actions is None or set(actions) <= self.only_actions


_ACCOUNT_ARN = r"arn:<AWS::Partition>:[a-z0-9-]+:<AWS::Region>:<AWS::AccountId>:"

REVIEWED: tuple[ReviewedWildcard, ...] = (
    ReviewedWildcard(
        "Resource",
        r"\*",
        "X-Ray trace upload and EC2 Describe* (for the MSK event source's network lookups) have "
        "no resource-level permissions; AWS requires Resource '*' for exactly these actions.",
        only_actions=STAR_RESOURCE_ACTIONS,
    ),
    ReviewedWildcard(
        "Action",
        r"kms:(GenerateDataKey|ReEncrypt)\*",
        "CDK's KMS grants (GenerateDataKey*, ReEncrypt*) scoped to one customer-managed key ARN.",
    ),
    ReviewedWildcard(
        "Resource",
        r"arn:<AWS::Partition>:s3:::margin-risk-monitor-audit-[a-z]+-<AWS::AccountId>/"
        r"(audit|rejected)/\*",
        "The enforcement function writes audit and rejected-record objects under their two "
        "prefixes of the audit bucket only (PutObject; Object Lock forbids overwriting history).",
    ),
    ReviewedWildcard(
        "Resource",
        r"(<[A-Za-z0-9]+\.Arn>|[A-Za-z0-9:-]+ExportsOutput[A-Za-z0-9]+)/checkpoints/\*",
        "The Spark job reads and writes its streaming checkpoint under one prefix.",
    ),
    ReviewedWildcard(
        "Resource",
        r"(<[A-Za-z0-9]+\.Arn>|[A-Za-z0-9:-]+ExportsOutput[A-Za-z0-9]+)/history/\*",
        "The Spark job writes the margin history's Parquet files under one prefix (PutObject, "
        "and GetObject for the file system's existence checks; it never deletes them).",
    ),
    ReviewedWildcard(
        "Resource",
        _ACCOUNT_ARN + r"group/margin-risk-monitor-msk/.+/(spark-kafka-source-|margin-risk-"
        r"monitor-margin-job)\*",
        "Spark's Kafka source generates consumer-group ids; the job may join groups under two "
        "fixed prefixes on this cluster only.",
    ),
    ReviewedWildcard(
        "Policy",
        r"arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "AWS-maintained minimum for a Lambda function: create and write its own log streams.",
    ),
    ReviewedWildcard(
        "Policy",
        r"arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
        "AWS-maintained minimum for a VPC function: manage its ENIs (EC2 network-interface "
        "actions have no resource-level permissions).",
    ),
)


def flatten(reference: Any) -> str:
    """cdk-nag's `flattenCfnReference`, so findings are spelled exactly as cdk-nag spells them."""
    if reference is None:
        return ""
    if isinstance(reference, str):
        return reference.replace("${", "<").replace("}", ">")
    if isinstance(reference, dict):
        if "Fn::Join" in reference:
            delimiter, items = reference["Fn::Join"]
            return str(delimiter).join(flatten(i) for i in items)
        if "Fn::Sub" in reference:
            return flatten(reference["Fn::Sub"])
        if "Fn::GetAtt" in reference:
            resource, attribute = reference["Fn::GetAtt"]
            return f"<{flatten(resource)}.{flatten(attribute)}>"
        if "Fn::ImportValue" in reference:
            return flatten(reference["Fn::ImportValue"])
        if "Ref" in reference:
            return f"<{flatten(reference['Ref'])}>"
    return json.dumps(reference, separators=(",", ":"))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Finding:
    kind: str
    text: str
    actions: tuple[str, ...]

    @property
    def rule_id(self) -> str:
        rule = "AwsSolutions-IAM4" if self.kind == "Policy" else "AwsSolutions-IAM5"
        return f"{rule}[{self.kind}::{self.text}]"

    def review(self) -> ReviewedWildcard | None:
        return next((r for r in REVIEWED if r.matches(self.kind, self.text, self.actions)), None)


def policy_findings(document: dict[str, Any]) -> Iterator[Finding]:
    """Wildcard actions and resources of the Allow statements of one policy document."""
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        actions = tuple(str(a) for a in _as_list(statement.get("Action", [])))
        for action in actions:
            if "*" in action:
                yield Finding("Action", action, actions)
        for resource in _as_list(statement.get("Resource", [])):
            text = flatten(resource)
            if "*" in text:
                yield Finding("Resource", text, actions)


def managed_policy_findings(arns: Iterable[Any]) -> Iterator[Finding]:
    for arn in arns:
        yield Finding("Policy", flatten(arn), ())


def template_findings(template: dict[str, Any]) -> Iterator[tuple[str, Finding]]:
    """Every IAM finding of a synthesized template, with its logical id."""
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for f in policy_findings(props.get("PolicyDocument", {})):
                yield logical_id, f
        elif resource["Type"] == "AWS::IAM::Role":
            for f in managed_policy_findings(props.get("ManagedPolicyArns", [])):
                yield logical_id, f
            for inline in props.get("Policies", []):
                for f in policy_findings(inline.get("PolicyDocument", {})):
                    yield logical_id, f


@jsii.implements(IValidation)
class AcknowledgeReviewedWildcards:
    """Runs after cross-stack references are resolved and before cdk-nag: acknowledges reviewed
    findings with their reasons. Unreviewed findings stay for cdk-nag to report."""

    def __init__(self, root: IConstruct) -> None:
        self._root = root

    def validate(self) -> list[str]:
        for node in self._root.node.find_all():
            for finding in self._findings(node):
                reviewed = finding.review()
                if reviewed is not None:
                    cdk.Validations.of(node).acknowledge(
                        cdk.Acknowledgment(id=finding.rule_id, reason=reviewed.reason)
                    )
        return []

    @staticmethod
    def _findings(node: IConstruct) -> Iterator[Finding]:
        if isinstance(node, iam.CfnPolicy):
            doc = cdk.Stack.of(node).resolve(node.policy_document)
            yield from policy_findings(doc or {})
        elif isinstance(node, iam.CfnRole):
            stack = cdk.Stack.of(node)
            yield from managed_policy_findings(stack.resolve(node.managed_policy_arns) or [])
            for inline in stack.resolve(node.policies) or []:
                yield from policy_findings(inline.get("PolicyDocument") or {})


def install(app: IConstruct) -> None:
    app.node.add_validation(AcknowledgeReviewedWildcards(app))
