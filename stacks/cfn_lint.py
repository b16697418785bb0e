"""cfn-lint suppressions, one rule on one resource, each with the reason a reviewer reads.

cfn-lint reads ``Metadata.cfn-lint.config.ignore_checks`` of a resource; the reason goes beside it
in ``Metadata.cfn-lint-reasons`` so the template itself says why, and
`tests/infra/test_cfn_lint.py` refuses a suppression without one.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk

REASONS_KEY = "cfn-lint-reasons"


def suppress(resource: cdk.CfnResource, rule: str, reason: str) -> None:
    if not reason.strip():
        raise ValueError(f"cfn-lint {rule} suppressed without a reason")
    current: dict[str, Any] = resource.get_metadata("cfn-lint") or {}
    checks = set(current.get("config", {}).get("ignore_checks", []))
    resource.add_metadata("cfn-lint", {"config": {"ignore_checks": sorted(checks | {rule})}})
    reasons: dict[str, str] = resource.get_metadata(REASONS_KEY) or {}
    resource.add_metadata(REASONS_KEY, {**reasons, rule: reason})
