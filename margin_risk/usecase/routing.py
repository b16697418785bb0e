"""Where each decision goes (spec section 4): topics for consumers, the operator's notifications."""

from __future__ import annotations

from collections.abc import Sequence

from margin_risk import names
from margin_risk.models import AuditEvent
from margin_risk.usecase.records import Publication, Topics

# New calls and liquidations page the operator (SNS); every decision goes to Kafka.
NOTIFY_TYPES = frozenset({names.EVENT_MARGIN_CALL_ISSUED, names.EVENT_LIQUIDATION_TRIGGERED})


def for_order_management(d: AuditEvent, restricted_met: set[str]) -> bool:
    """Whether order management must hear of ``d`` (``restrictions.v1``): a restriction, and
    anything that lifts one: a cure of a restricted account (its id in ``restricted_met``, since a
    cure's decision does not say whether the account was restricted) or a waiver that lifted one
    (which says so itself, ``details.restriction_lifted``)."""
    if d.event_type == names.EVENT_ACCOUNT_RESTRICTED or d.event_id in restricted_met:
        return True
    lifted = getattr(d.details, "restriction_lifted", False) is True
    return d.event_type == names.EVENT_MARGIN_CALL_WAIVED and lifted


def route(
    decisions: Sequence[AuditEvent], restricted_met: set[str], topics: Topics
) -> list[Publication]:
    """Spec section 4: every decision to margin.calls.v1, plus restrictions and liquidations."""
    out: list[Publication] = []
    for d in decisions:
        out.append(Publication(topics.decisions, d))
        if for_order_management(d, restricted_met):
            out.append(Publication(topics.restrictions, d))
        if d.event_type == names.EVENT_LIQUIDATION_TRIGGERED:
            out.append(Publication(topics.liquidations, d))
    return out
