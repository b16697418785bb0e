"""cfn-lint (pinned in requirements-dev.txt) over every synthesized template of dev and prod:
no error, no warning; a rule silenced on a resource says why (`stacks/cfn_lint.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file

from stacks.cfn_lint import REASONS_KEY
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra


def test_cfn_lint_finds_nothing_in_any_template(synth: Synth) -> None:
    templates = sorted(Path(synth.outdir).glob("MarginRisk-*.template.json"))
    assert len(templates) == 12  # six stacks, dev and prod
    findings = [
        f"{t.name}: {m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for t in templates
        for m in lint_file(t, ManualArgs(regions=["us-east-1"]))
    ]
    assert findings == []


def test_every_cfn_lint_suppression_has_a_reason(synth: Synth) -> None:
    suppressed = 0
    for name, template in synth.templates.items():
        for lid, res in template["Resources"].items():
            meta = res.get("Metadata", {})
            rules = meta.get("cfn-lint", {}).get("config", {}).get("ignore_checks", [])
            for rule in rules:
                suppressed += 1
                assert meta.get(REASONS_KEY, {}).get(rule, "").strip(), f"{name}/{lid}: {rule}"
    assert suppressed == 4  # W3005 on two CDK-generated functions, in dev and prod
