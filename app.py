#!/usr/bin/env python3
"""CDK entry point: `cdk synth|deploy -c env=dev` (or prod; `-c env=dev,prod` for both).

cdk-nag's AwsSolutions pack runs as a policy-validation plugin on every synth: an unacknowledged
finding fails the synth.
"""

from __future__ import annotations

import aws_cdk as cdk

from stacks.app_builder import build_app, enable_cdk_nag

app = cdk.App()
build_app(app)
enable_cdk_nag(app)
app.synth()
