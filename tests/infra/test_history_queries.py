"""The margin history's Glue tables and named queries: the tables describe exactly the archive
layout (`margin_risk.archive`), and the queries run for real with DuckDB over Parquet written by
the reference writer (`margin_risk.tools.history.write_history`), through the demo's local engine.

Book: 1,000 AAPL with a $20,000 debit, 25% long requirement (spec section 1). At $30: equity
10,000, requirement 7,500, excess 2,500 on a gross of 30,000 (cushion 0.0833); at $40: excess
10,000 of 40,000 (0.25); at $28: 1,000 of 28,000 (0.0357); at $27: 250 of 27,000 (0.0093); at
$50: 17,500 of 50,000 (0.35); at $25: a deficiency of 1,250 (in a call).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from margin_risk import archive, names
from margin_risk.tools.history import write_history
from margin_risk.tools.local.athena_local import LocalAthena
from stacks.athena_queries import NAMED_QUERIES
from stacks.history import PARQUET_SERDE, TABLES
from stacks.processing import CHECKPOINT_PREFIX
from tests.factories import long_book, margin_calc, stress_result
from tests.infra.conftest import Synth

DAY = 86_400
DEBIT = -20_000.0


def calc(account: str, seconds: float, price: float, eid: str):  # type: ignore[no-untyped-def]
    return margin_calc(account, seconds, DEBIT, long_book(price), event_id=eid)


RESULTS = [
    calc("ACC_A", 0, 40.0, "a0"),  # 2026-02-16 14:30
    calc("ACC_A", 3_600, 30.0, "a1"),  # 15:30
    calc("ACC_A", DAY, 28.0, "a2"),  # the next day
    calc("ACC_B", 600, 30.0, "b0"),
    calc("ACC_C", 600, 40.0, "c0"),
    calc("ACC_D", 600, 25.0, "d0"),  # in a call
    calc("ACC_E", 0, 27.0, "e0"),  # nearest of all at 14:30 ...
    calc("ACC_E", 3_600, 50.0, "e1"),  # ... healthy since 15:30
]


@pytest.fixture(scope="module")
def athena(tmp_path_factory: pytest.TempPathFactory) -> LocalAthena:
    root = tmp_path_factory.mktemp("history")
    write_history(root, RESULTS)
    # a retried micro-batch wrote a1 again, in another file
    write_history(root, [RESULTS[1]], name="part-1")
    write_history(root, [stress_result("ACC_A", 0, DEBIT, long_book(40.0), event_id="s0")])
    return LocalAthena(tmp_path_factory.mktemp("audit"), history_root=root)


def test_account_margin_over_a_day_is_every_result_once_in_time_order(athena: LocalAthena):
    q = NAMED_QUERIES["account_margin_over_day"]
    rows = athena.query(q.sql, ["ACC_A", "2026-02-16"])
    assert [r["event_id"] for r in rows] == ["a0", "a1"]  # a1 once, a2 is the next day
    assert [(r["equity"], r["maintenance_req"], r["excess"]) for r in rows] == [
        (20_000, 10_000, 10_000),
        (10_000, 7_500, 2_500),
    ]
    assert all(isinstance(r["excess"], Decimal) for r in rows)  # exact, as archived
    assert [r["event_id"] for r in athena.query(q.sql, ["ACC_A", "2026-02-17"])] == ["a2"]
    assert athena.query(q.sql, ["ACC_B", "2026-02-17"]) == []


def test_accounts_nearest_a_call_by_their_latest_result(athena: LocalAthena):
    q = NAMED_QUERIES["accounts_nearest_call_now"]
    rows = athena.query(q.sql, ["2026-02-16"])
    # A by its latest result (the next day's), E by its healthy one, D (in a call) not at all
    assert [(r["account_id"], r["excess"], r["gross"]) for r in rows] == [
        ("ACC_A", 1_000, 28_000),
        ("ACC_B", 2_500, 30_000),
        ("ACC_C", 10_000, 40_000),
        ("ACC_E", 17_500, 50_000),
    ]
    assert [round(r["cushion"], 4) for r in rows] == [0.0357, 0.0833, 0.25, 0.35]
    assert [r["account_id"] for r in athena.query(q.sql, ["2026-02-17"])] == ["ACC_A"]


def test_the_local_views_have_the_archive_columns_and_partitions(athena: LocalAthena):
    for view, kind in ((names.MARGIN_HISTORY_TABLE, "margin_calc"), ("stress_history", "stress")):
        cols = [r["column_name"] for r in athena.query(f"DESCRIBE {view}")]
        assert cols == [*archive.COLUMNS[kind], "event_date", "hour"]
    (row,) = athena.query("SELECT event_id, event_date, hour FROM stress_history")
    assert row == {"event_id": "s0", "event_date": "2026-02-16", "hour": 14}


@pytest.mark.infra
@pytest.mark.parametrize("env", ["dev", "prod"])
def test_glue_tables_describe_the_archive_with_partition_projection(synth: Synth, env: str):
    tables = synth.resources(env, "Processing", "AWS::Glue::Table")
    by_name = {t["Properties"]["TableInput"]["Name"]: t["Properties"] for t in tables.values()}
    assert set(by_name) == {names.MARGIN_HISTORY_TABLE, names.STRESS_HISTORY_TABLE}
    ((bucket_lid, _),) = synth.resources(env, "Processing", "AWS::S3::Bucket").items()
    first_year = synth.configs[env].storage.audit_first_year
    for name, props in by_name.items():
        kind = TABLES[name]
        assert props["DatabaseName"] == names.GLUE_DATABASE
        ti = props["TableInput"]
        sd = ti["StorageDescriptor"]
        assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == list(
            archive.COLUMNS[kind].items()
        )
        assert [(c["Name"], c["Type"]) for c in ti["PartitionKeys"]] == [
            ("event_date", "string"),
            ("hour", "int"),
        ]
        assert sd["SerdeInfo"]["SerializationLibrary"] == PARQUET_SERDE
        p = ti["Parameters"]
        assert p["projection.enabled"] == "true"
        assert p["projection.event_date.type"] == "date"
        assert p["projection.event_date.format"] == "yyyy-MM-dd"  # as the writer names it
        assert p["projection.event_date.range"] == f"{first_year}-01-01,NOW"
        assert (p["projection.hour.type"], p["projection.hour.range"]) == ("integer", "0,23")
        assert "projection.hour.digits" not in p  # unpadded: hour=7, not hour=07
        template = p["storage.location.template"]["Fn::Join"][1]
        joined = "".join(x if isinstance(x, str) else f"<{x['Ref']}>" for x in template)
        assert joined == (
            f"s3://<{bucket_lid}>/history/{kind}/event_date=${{event_date}}/hour=${{hour}}/"
        )


@pytest.mark.infra
def test_only_the_checkpoints_expire_and_the_history_is_kept(synth: Synth):
    ((_, bucket),) = synth.resources("dev", "Processing", "AWS::S3::Bucket").items()
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    expiring = [r for r in rules.values() if "ExpirationInDays" in r]
    assert [r["Prefix"] for r in expiring] == [CHECKPOINT_PREFIX]
    history = [r for r in rules.values() if r.get("Prefix") == names.HISTORY_PREFIX]
    assert history and all("ExpirationInDays" not in r for r in history)
