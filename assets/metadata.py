"""Metadata of the assets: what the table IO manager records for every table, and pictures."""

from __future__ import annotations

import base64

import dagster as dg
import pandas as pd
import pyarrow as pa

from assets.columns import describe
from pipeline.tables import SHARD


def _preview(df: pd.DataFrame, rows: int) -> str:
    head = df.head(rows).copy()
    for col in head.columns:
        if head[col].dtype == object or pd.api.types.is_string_dtype(head[col]):
            head[col] = head[col].map(lambda v: (str(v)[:60] + "…") if len(str(v)) > 60 else v)
    return head.to_markdown(index=False) if len(head) else "_(empty table)_"


def table_metadata(name: str, df: pd.DataFrame, schema: pa.Schema, path: object, preview_rows: int = 5,
                   sharded: bool = False) -> dict:
    """What the table IO manager records once per output: row count, column schema (the file's Arrow types, the
    descriptions of assets/columns.py; a sharded table's `shard` column, which lives in its path, last), a preview
    and where it is."""
    columns = [dg.TableColumn(f.name, str(f.type), description=describe(name, f.name)) for f in schema]
    if sharded:
        columns.append(dg.TableColumn(SHARD, "string (partition, in the path)", description=describe(name, SHARD)))
    return {
        "dagster/row_count": dg.MetadataValue.int(len(df)),
        "dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns=columns)),
        "preview": dg.MetadataValue.md(_preview(df, preview_rows)),
        "path": dg.MetadataValue.path(str(path)),
    }


def image_md(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI (markdown with a data URI)."""
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")
