"""Builds every stack of one environment; app.py and the tests share it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from dashboards.cdk_render import ObservedResources
from margin_risk import names
from stacks import iam_allowlist
from stacks.config import (
    CONTEXT_ENV,
    CONTEXT_ENVIRONMENTS,
    CONTEXT_SKIP_DEPS,
    ENV_SKIP_DEPS,
    EnvironmentConfig,
    load_environments,
    stack_name,
    truthy,
)
from stacks.enforcement import EnforcementStack
from stacks.network import NetworkStack
from stacks.observability import ObservabilityStack
from stacks.processing import ProcessingStack
from stacks.storage import StorageStack
from stacks.streaming import StreamingStack


@dataclass
class EnvironmentStacks:
    network: NetworkStack
    streaming: StreamingStack
    storage: StorageStack
    processing: ProcessingStack
    enforcement: EnforcementStack
    observability: ObservabilityStack

    def all(self) -> list[cdk.Stack]:
        return [
            self.network,
            self.streaming,
            self.storage,
            self.processing,
            self.enforcement,
            self.observability,
        ]


def build_environment(
    app: cdk.App, config: EnvironmentConfig, *, skip_deps: bool
) -> EnvironmentStacks:
    """The six stacks of one environment, wired by references (CloudFormation exports)."""
    env = config.name
    network = NetworkStack(app, stack_name(env, "Network"), config=config)
    streaming = StreamingStack(app, stack_name(env, "Streaming"), config=config, vpc=network.vpc)
    storage = StorageStack(app, stack_name(env, "Storage"), config=config)
    processing = ProcessingStack(
        app,
        stack_name(env, "Processing"),
        config=config,
        vpc=network.vpc,
        kafka=streaming.cluster_ref,
        kafka_client_sg=streaming.kafka.client_security_group,
        access_logs=storage.audit.access_logs,
    )
    enforcement = EnforcementStack(
        app,
        stack_name(env, "Enforcement"),
        config=config,
        vpc=network.vpc,
        kafka=streaming.cluster_ref,
        kafka_client_sg=streaming.kafka.client_security_group,
        bootstrap_servers=streaming.bootstrap.bootstrap_servers,
        state_table=storage.tables.state,
        idempotency_table=storage.tables.idempotency,
        data_key=storage.key,
        skip_deps=skip_deps,
    )
    enforcement.add_stack_dependency(storage, "the audit bucket exists before the function writes")
    enforcement.add_stack_dependency(streaming, "topics exist before the mappings start polling")
    observability = ObservabilityStack(
        app,
        stack_name(env, "Observability"),
        config=config,
        resources=ObservedResources(
            function_name=enforcement.function.function_name,
            state_table_name=storage.tables.state.table_name,
            idempotency_table_name=storage.tables.idempotency.table_name,
            on_failure_queue_name=enforcement.on_failure.queue.queue_name,
            emr_application_id=processing.application.attr_application_id,
            msk_cluster_name=names.MSK_CLUSTER,
            audit_bucket_name=storage.audit.bucket.bucket_name,
            spark_log_group_name=processing.log_group.log_group_name,
        ),
    )
    stacks = EnvironmentStacks(network, streaming, storage, processing, enforcement, observability)
    for stack in stacks.all():
        cdk.Tags.of(stack).add("project", names.PROJECT)
        for key, value in config.tags.items():
            cdk.Tags.of(stack).add(key, value)
    return stacks


def selected_environments(app: cdk.App) -> list[EnvironmentConfig]:
    configs = load_environments(app.node.try_get_context(CONTEXT_ENVIRONMENTS))
    wanted = str(app.node.try_get_context(CONTEXT_ENV) or "dev").split(",")
    missing = [w for w in wanted if w not in configs]
    if missing:
        raise ValueError(f"unknown environment(s) {missing}; cdk.json defines {sorted(configs)}")
    return [configs[w] for w in wanted]


def skip_deps_requested(app: cdk.App) -> bool:
    return truthy(app.node.try_get_context(CONTEXT_SKIP_DEPS)) or truthy(
        os.environ.get(ENV_SKIP_DEPS, "")
    )


def build_app(app: cdk.App) -> dict[str, EnvironmentStacks]:
    skip = skip_deps_requested(app)
    return {c.name: build_environment(app, c, skip_deps=skip) for c in selected_environments(app)}


def enable_cdk_nag(app: cdk.App) -> None:
    """cdk-nag's AwsSolutions pack as a policy-validation plugin; reviewed IAM wildcards
    (stacks/iam_allowlist.py) are acknowledged with their reasons, everything else fails."""
    iam_allowlist.install(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
