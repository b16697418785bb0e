"""The margin history's Glue tables: every archived ``margin.calc.v1`` and ``stress.beta_spy.v1``
result, as Parquet under the Spark job's bucket, queryable by Athena.

Layout and columns come from `margin_risk.archive` (the one definition the Spark writer,
`backtest` and these tables share). Partition projection makes a new hour queryable the moment
its first file lands, with no crawler and no ``MSCK REPAIR``: ``event_date`` is a date-formatted
string (``yyyy-MM-dd``, from the first audit year up to today), ``hour`` an unpadded integer 0-23,
exactly as the writer names its directories.

The tables live beside the bucket that holds the files (the processing stack); the database is
the storage stack's, which this stack already depends on.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_glue as glue
from aws_cdk import aws_s3 as s3
from constructs import Construct

from margin_risk import archive, names

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
# Glue table name -> archive kind (the directory under the history prefix).
TABLES: Mapping[str, str] = {
    names.MARGIN_HISTORY_TABLE: archive.KIND_MARGIN,
    names.STRESS_HISTORY_TABLE: archive.KIND_STRESS,
}
DESCRIPTIONS: Mapping[str, str] = {
    archive.KIND_MARGIN: "Every margin.calc.v1 result the Spark job computed (spec section 4).",
    archive.KIND_STRESS: "Every stress.beta_spy.v1 result the Spark job computed (spec section 4).",
}


def projection_parameters(location: str, first_year: int) -> dict[str, str]:
    """Table parameters: Parquet, and partition projection over ``<location>event_date=/hour=/``."""
    return {
        "classification": "parquet",
        "EXTERNAL": "TRUE",
        "projection.enabled": "true",
        "projection.event_date.type": "date",
        "projection.event_date.format": "yyyy-MM-dd",
        "projection.event_date.range": f"{first_year}-01-01,NOW",
        "projection.event_date.interval": "1",
        "projection.event_date.interval.unit": "DAYS",
        "projection.hour.type": "integer",
        "projection.hour.range": "0,23",
        "storage.location.template": location + "event_date=${event_date}/hour=${hour}/",
    }


class HistoryTables(Construct):
    """``margin_history`` and ``stress_history`` over ``s3://<bucket>/history/<kind>/``."""

    def __init__(
        self, scope: Construct, construct_id: str, *, bucket: s3.IBucket, first_year: int
    ) -> None:
        super().__init__(scope, construct_id)
        self.tables: dict[str, glue.CfnTable] = {}
        for table, kind in TABLES.items():
            location = f"s3://{bucket.bucket_name}/{names.HISTORY_PREFIX}{kind}/"
            self.tables[table] = glue.CfnTable(
                self,
                kind,
                catalog_id=cdk.Aws.ACCOUNT_ID,
                database_name=names.GLUE_DATABASE,
                table_input=glue.CfnTable.TableInputProperty(
                    name=table,
                    description=DESCRIPTIONS[kind],
                    table_type="EXTERNAL_TABLE",
                    parameters=projection_parameters(location, first_year),
                    partition_keys=[
                        glue.CfnTable.ColumnProperty(name=c, type=t)
                        for c, t in archive.PARTITION_TYPES.items()
                    ],
                    storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                        location=location,
                        input_format=PARQUET_INPUT,
                        output_format=PARQUET_OUTPUT,
                        columns=[
                            glue.CfnTable.ColumnProperty(name=c, type=t)
                            for c, t in archive.COLUMNS[kind].items()
                        ],
                        serde_info=glue.CfnTable.SerdeInfoProperty(
                            serialization_library=PARQUET_SERDE
                        ),
                    ),
                ),
            )
