"""DynamoDB account-state repository: head item per account, history items below it.

Per batch: one BatchGetItem per 100 accounts, one conditional PutItem per account touched (the
version guard that keeps two invocations from both moving an account), and history via
BatchWriteItem: before committing version v+1 the head it loaded (version v, with the batch id and
decision ids that wrote it) is copied to ``H#v``, so history never holds an uncommitted version.
``ReturnValuesOnConditionCheckFailure=ALL_OLD`` hands back the winner's item with the failure, so a
conflict costs no extra read. The head also stores the commit's audit outbox, so the decisions are
committed in the same conditional write as the state they change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

from botocore.exceptions import ClientError

from margin_risk import names
from margin_risk.enforcement import AccountState
from margin_risk.models import iso
from margin_risk.outbox import Outbox
from margin_risk.usecase.records import CommitInfo

BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25
MAX_UNPROCESSED_ROUNDS = 8
# The head's audit outbox (`margin_risk.outbox`): the decisions committed with the state.
OUTBOX_ATTR = "audit_outbox"
# Conditional head writes in flight at once (distinct accounts): a 1,000-record batch touches
# ~200 accounts, and one round trip each, in turn, was the batch's longest step.
MAX_CONCURRENT_COMMITS = 16


def history_sk(version: int) -> str:
    """``H#000000000042``: sorts below ``LATEST`` so a descending query returns the head first."""
    return f"{names.SK_HISTORY_PREFIX}{version:012d}"


def _state_attrs(state: AccountState) -> dict[str, Any]:
    """The state JSON plus a few flat attributes an operator can read in the console."""
    m = state.margin
    return {
        names.PK_ACCOUNT: {"S": state.account_id},
        "version": {"N": str(state.version)},
        "state": {"S": state.model_dump_json()},
        "call_open": {"BOOL": m.call_open},
        "restricted": {"BOOL": m.restricted},
        "liquidation_triggered": {"BOOL": m.liquidation_triggered},
        "stress_breached": {"BOOL": state.stress.breached},
    }


def state_from_item(item: dict[str, Any]) -> AccountState:
    state = AccountState.model_validate_json(item["state"]["S"])
    return state.model_copy(update={"version": int(item["version"]["N"])})


class DynamoStateRepository:
    """`ports.StateRepository` on the account-state table."""

    def __init__(
        self,
        client: Any,
        table_name: str = names.ACCOUNT_STATE_TABLE,
        max_concurrent_commits: int = MAX_CONCURRENT_COMMITS,
    ) -> None:
        self.client = client
        self.table = table_name
        # Give the client at least this many pooled connections (botocore's default is 10).
        self.max_concurrent_commits = max_concurrent_commits
        # Raw head items last seen per account (loaded, or returned by a failed condition).
        self._heads: dict[str, dict[str, Any]] = {}

    def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        out: dict[str, AccountState] = {}
        self._heads.clear()
        ids = list(dict.fromkeys(account_ids))
        for i in range(0, len(ids), BATCH_GET_LIMIT):
            keys: list[dict[str, Any]] = [
                {names.PK_ACCOUNT: {"S": a}, names.SK_ITEM: {"S": names.SK_HEAD}}
                for a in ids[i : i + BATCH_GET_LIMIT]
            ]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for round_ in range(MAX_UNPROCESSED_ROUNDS):
                resp = self.client.batch_get_item(RequestItems=request)
                for item in resp.get("Responses", {}).get(self.table, []):
                    s = state_from_item(item)
                    out[s.account_id] = s
                    self._heads[s.account_id] = item
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**round_)
            else:
                raise RuntimeError("BatchGetItem left keys unprocessed after retries")
        return out

    def commit(
        self, state: AccountState, expected_version: int, info: CommitInfo
    ) -> AccountState | None:
        item = {
            **_state_attrs(state),
            names.SK_ITEM: {"S": names.SK_HEAD},
            "batch_id": {"S": info.batch_id},
            "decision_ids": {"L": [{"S": d} for d in info.decision_ids]},
            "committed_at": {"S": iso(info.committed_at)},
        }
        if info.outbox is not None:
            item[OUTBOX_ATTR] = {"S": info.outbox.to_json()}
        if expected_version == 0:
            cond = f"attribute_not_exists({names.PK_ACCOUNT})"
            values: dict[str, Any] = {}
        else:
            cond = "version = :expected"
            values = {":expected": {"N": str(expected_version)}}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": cond,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.client.put_item(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old = cast("dict[str, Any] | None", e.response.get("Item"))
            if not old:  # ALL_OLD returns the item that failed the condition; the role has no read
                raise RuntimeError(f"{state.account_id}: conflict without the stored item") from e
            self._heads[state.account_id] = old
            return state_from_item(old)
        return None

    def outbox(self, account_id: str) -> Outbox | None:
        attr = self._heads.get(account_id, {}).get(OUTBOX_ATTR)
        return None if attr is None else Outbox.from_json(attr["S"])

    def archive(self, account_ids: Sequence[str]) -> None:
        puts: list[dict[str, Any]] = []
        for a in dict.fromkeys(account_ids):
            head = self._heads.get(a)
            if head is None:
                continue  # a new account: nothing committed yet
            version = int(head["version"]["N"])
            puts.append(
                {"PutRequest": {"Item": {**head, names.SK_ITEM: {"S": history_sk(version)}}}}
            )
        for i in range(0, len(puts), BATCH_WRITE_LIMIT):
            request: dict[str, Any] = {self.table: puts[i : i + BATCH_WRITE_LIMIT]}
            for round_ in range(MAX_UNPROCESSED_ROUNDS):
                resp = self.client.batch_write_item(RequestItems=request)
                request = resp.get("UnprocessedItems") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**round_)
            else:
                raise RuntimeError("BatchWriteItem left items unprocessed after retries")

    def scan_heads(self) -> dict[str, AccountState]:
        """Every account's current state (tests, the demo and the rebuild comparison)."""
        out: dict[str, AccountState] = {}
        paginator = self.client.get_paginator("scan")
        for page in paginator.paginate(
            TableName=self.table,
            FilterExpression=f"{names.SK_ITEM} = :head",
            ExpressionAttributeValues={":head": {"S": names.SK_HEAD}},
        ):
            for item in page.get("Items", []):
                s = state_from_item(item)
                out[s.account_id] = s
        return out

    def history(self, account_id: str) -> list[dict[str, Any]]:
        """The account's items newest first (head, then history), as the seed's queries."""
        resp = self.client.query(
            TableName=self.table,
            KeyConditionExpression=f"{names.PK_ACCOUNT} = :a",
            ExpressionAttributeValues={":a": {"S": account_id}},
            ScanIndexForward=False,
        )
        items: list[dict[str, Any]] = resp.get("Items", [])
        return items
