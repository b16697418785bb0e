"""IAM as the tests' gatekeeper: the synthesized policies, resolved to local names, and an
evaluator of (action, resource, context) requests against them.

Why an evaluator and not moto's own IAM enforcement: moto checks resources only for S3 (every
other service is asked for resource "*", so a table- or topic-scoped statement can never match),
while the point here is the resource scoping as much as the actions. The evaluator implements the
part of IAM these policies use: Allow statements, `*`/`?` wildcards in actions and resources, and
the condition operators StringEquals, StringLike, ArnLike and Null. A statement with a condition on a
key the request does not carry does not match (as in IAM).

Template tokens are resolved to the names a deployment gets (`ACCOUNT`, `REGION`, the resources'
own name properties), so a request recorded against the embedded endpoint, with its per-test names
mapped to the deployed ones, is evaluated against exactly what `cdk synth` produced.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
# The MSK cluster ARN's last segment (a UUID and a revision) is only known after deployment.
CLUSTER_UUID = "0b1c2d3e-0000-4000-8000-00000000000a-2"

# AWS managed policies the stacks attach, as AWS publishes them (policy documents of the AWS
# Managed Policy Reference pages of the same names).
AWS_MANAGED: dict[str, list[dict[str, Any]]] = {
    "AWSLambdaBasicExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ],
    "AWSLambdaVPCAccessExecutionRole": [
        {
            "Effect": "Allow",
            "Action": [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "ec2:CreateNetworkInterface",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSubnets",
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            ],
            "Resource": "*",
        }
    ],
}


@dataclass(frozen=True)
class Request:
    """One authorization IAM would make: an action on a resource, with its condition keys."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    why: str = ""

    @classmethod
    def of(cls, action: str, resource: str, why: str = "", **context: str) -> Request:
        return cls(action, resource, tuple(sorted(context.items())), why)


@dataclass
class Statement:
    actions: list[str]
    resources: list[str]
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""


def _glob(pattern: str, value: str, *, case: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _condition_holds(op: str, key: str, expected: Any, ctx: Mapping[str, str]) -> bool:
    values = [str(x) for x in _as_list(expected)]
    if op == "Null":
        # "Null": {"k": "false"} requires the key to be present; "true" requires it absent.
        return (key not in ctx) == (values[0].lower() == "true")
    if key not in ctx:
        return False
    actual = ctx[key]
    if op == "StringEquals":
        return actual in values
    if op in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(actual, v) for v in values)
    raise AssertionError(f"condition operator {op} not modelled by the evaluator")


def matches(st: Statement, req: Request) -> bool:
    if not any(_glob(a, req.action, case=False) for a in st.actions):
        return False
    if not any(_glob(r, req.resource, case=True) for r in st.resources):
        return False
    ctx = dict(req.context)
    return all(
        _condition_holds(op, k, v, ctx) for op, kv in st.conditions.items() for k, v in kv.items()
    )


def allowed(statements: Iterable[Statement], req: Request) -> bool:
    return any(matches(st, req) for st in statements)


def unused(statements: Iterable[Statement], requests: Iterable[Request]) -> list[str]:
    """Every (action, resource) pair of the policy that no request needs (least privilege)."""
    reqs = list(requests)
    out: list[str] = []
    for st in statements:
        for a in st.actions:
            for r in st.resources:
                narrowed = Statement([a], [r], st.conditions, st.source)
                if not any(matches(narrowed, q) for q in reqs):
                    out.append(f"{a} on {r} ({st.source})")
    return out


# --- Template resolution -------------------------------------------------------------------------
class Templates:
    """The synthesized templates of one environment, with their tokens resolved to local names."""

    def __init__(self, templates: Mapping[str, dict[str, Any]], env: str) -> None:
        self.env = env
        self.templates = {k: v for k, v in templates.items() if k.startswith(f"MarginRisk-{env}-")}
        self.exports: dict[str, tuple[str, Any]] = {}
        for stack, t in self.templates.items():
            for out in t.get("Outputs", {}).values():
                name = out.get("Export", {}).get("Name")
                if name is not None:
                    self.exports[self.resolve(stack, name)] = (stack, out["Value"])

    def resource(self, stack: str, logical_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.templates[stack]["Resources"][logical_id]
        return found

    def find(self, part: str, rtype: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        stack = f"MarginRisk-{self.env}-{part}"
        for lid, r in self.templates[stack]["Resources"].items():
            if r["Type"] == rtype:
                yield stack, lid, r

    def _name(self, stack: str, lid: str, prop: str) -> str:
        props = self.resource(stack, lid).get("Properties", {})
        return self.resolve(stack, props[prop]) if prop in props else lid.lower()

    def ref(self, stack: str, lid: str) -> str:
        pseudo = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if lid in pseudo:
            return pseudo[lid]
        rtype = self.resource(stack, lid)["Type"]
        if rtype == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{self._name(stack, lid, 'TopicName')}"
        if rtype == "AWS::S3::Bucket":
            return self._name(stack, lid, "BucketName")
        if rtype == "AWS::DynamoDB::Table":
            return self._name(stack, lid, "TableName")
        if rtype == "AWS::IAM::Role":
            return self._name(stack, lid, "RoleName")
        if rtype == "AWS::IAM::ManagedPolicy":
            return f"arn:aws:iam::{ACCOUNT}:policy/{self._name(stack, lid, 'ManagedPolicyName')}"
        if rtype == "AWS::Logs::LogGroup":
            return self._name(stack, lid, "LogGroupName")
        if rtype == "AWS::KMS::Key":
            return lid.lower()
        return lid

    def arn(self, stack: str, lid: str) -> str:
        rtype = self.resource(stack, lid)["Type"]
        if rtype == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.ref(stack, lid)}"
        if rtype == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{self.ref(stack, lid)}"
        if rtype == "AWS::KMS::Key":
            return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{lid.lower()}"
        if rtype == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self._name(stack, lid, 'QueueName')}"
        if rtype == "AWS::Logs::LogGroup":
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self.ref(stack, lid)}:*"
        if rtype == "AWS::MSK::Cluster":
            name = self._name(stack, lid, "ClusterName")
            return f"arn:aws:kafka:{REGION}:{ACCOUNT}:cluster/{name}/{CLUSTER_UUID}"
        if rtype == "AWS::IAM::Role":
            return f"arn:aws:iam::{ACCOUNT}:role/{self.ref(stack, lid)}"
        if rtype == "AWS::SNS::Topic":
            return self.ref(stack, lid)
        raise AssertionError(f"no ARN model for {rtype} ({lid})")

    def resolve(self, stack: str, v: Any) -> Any:
        if isinstance(v, str):
            return v
        if isinstance(v, list):
            return [self.resolve(stack, x) for x in v]
        if not isinstance(v, dict) or len(v) != 1:
            return v
        ((fn, arg),) = v.items()
        if fn == "Ref":
            return self.ref(stack, arg)
        if fn == "Fn::GetAtt":
            lid, attr = arg
            assert attr == "Arn", f"GetAtt {attr} not modelled"
            return self.arn(stack, lid)
        if fn == "Fn::Join":
            sep, parts = arg
            return str(sep).join(str(self.resolve(stack, p)) for p in parts)
        if fn == "Fn::Select":
            idx, items = arg
            return self.resolve(stack, items)[int(idx)]
        if fn == "Fn::Split":
            sep, text = arg
            return str(self.resolve(stack, text)).split(sep)
        if fn == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(self.ref(stack, m.group(1))), text)
        if fn == "Fn::ImportValue":
            other, value = self.exports[self.resolve(stack, arg)]
            return self.resolve(other, value)
        return v

    # -- principals --------------------------------------------------------------------------------
    def statements_of_role(self, stack: str, role_lid: str) -> list[Statement]:
        """Every Allow statement in force for the role: its inline and attached policies."""
        out: list[Statement] = []
        role = self.resource(stack, role_lid)["Properties"]
        for arn in role.get("ManagedPolicyArns", []):
            name = str(self.resolve(stack, arn)).rsplit("/", 1)[-1]
            for st in AWS_MANAGED[name]:
                out.append(_statement(st, f"AWS managed {name}"))
        for lid, r in self.templates[stack]["Resources"].items():
            if r["Type"] != "AWS::IAM::Policy":
                continue
            if {"Ref": role_lid} not in r["Properties"].get("Roles", []):
                continue
            out.extend(self.document(stack, r["Properties"]["PolicyDocument"], lid))
        return out

    def document(self, stack: str, doc: Mapping[str, Any], source: str) -> list[Statement]:
        out: list[Statement] = []
        for st in doc["Statement"]:
            assert st["Effect"] == "Allow", f"{source}: Deny statements not modelled"
            resolved = {**st, "Resource": self.resolve(stack, st["Resource"])}
            out.append(_statement(resolved, source))
        return out


def _statement(st: Mapping[str, Any], source: str) -> Statement:
    return Statement(
        [str(a) for a in _as_list(st["Action"])],
        [str(r) for r in _as_list(st["Resource"])],
        dict(st.get("Condition", {})),
        source,
    )


# --- Requests from recorded AWS calls ----------------------------------------------------------
def requests_of_call(service: str, operation: str, params: Mapping[str, Any]) -> list[Request]:
    """The IAM authorizations one AWS API call needs (for the operations this code makes)."""
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/"
    if service == "dynamodb":
        if operation in ("BatchGetItem", "BatchWriteItem"):
            tables = list(params["RequestItems"])
        else:
            tables = [params["TableName"]]
        return [Request.of(f"dynamodb:{operation}", table + t) for t in tables]
    if service == "s3":
        obj = f"arn:aws:s3:::{params.get('Bucket')}/{params.get('Key')}"
        if operation == "PutObject":
            ctx = {"s3:if-none-match": params["IfNoneMatch"]} if "IfNoneMatch" in params else {}
            return [Request.of("s3:PutObject", obj, **ctx)]
        if operation in ("GetObject", "HeadObject"):
            return [Request.of("s3:GetObject", obj)]
        if operation == "DeleteObject":
            return [Request.of("s3:DeleteObject", obj)]
        if operation == "DeleteObjects":
            b = params["Bucket"]
            return [
                Request.of("s3:DeleteObject", f"arn:aws:s3:::{b}/{o['Key']}")
                for o in params["Delete"]["Objects"]
            ]
        if operation in ("ListObjectsV2", "ListObjects"):
            return [Request.of("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}")]
    if service == "sns" and operation in ("Publish", "PublishBatch"):
        return [Request.of("sns:Publish", params["TopicArn"])]
    if service == "cloudwatch" and operation == "PutMetricData":
        return [
            Request.of(
                "cloudwatch:PutMetricData", "*", **{"cloudwatch:namespace": params["Namespace"]}
            )
        ]
    raise AssertionError(f"no IAM model for {service}.{operation}: add it before using the call")


def renamed(req: Request, names: Mapping[str, str]) -> Request:
    """The request with per-test resource names replaced by the deployed ones."""
    resource = req.resource
    for local, deployed in names.items():
        resource = resource.replace(local, deployed)
    return Request(req.action, resource, req.context, req.why)
