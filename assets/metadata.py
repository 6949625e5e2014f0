"""Metadata that every table asset attaches: row count, column schema, a preview, and pictures."""

from __future__ import annotations

import base64

import dagster as dg
import pandas as pd


def _preview(df: pd.DataFrame, rows: int) -> str:
    head = df.head(rows).copy()
    for col in head.columns:
        if head[col].dtype == object:
            head[col] = head[col].map(lambda v: (str(v)[:60] + "…") if len(str(v)) > 60 else v)
    return head.to_markdown(index=False) if len(head) else "_(empty table)_"


def table_metadata(df: pd.DataFrame, path: object | None = None, preview_rows: int = 5) -> dict:
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in df.dtypes.items()])
    meta = {
        "dagster/row_count": dg.MetadataValue.int(len(df)),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        "preview": dg.MetadataValue.md(_preview(df, preview_rows)),
    }
    if path is not None:
        meta["path"] = dg.MetadataValue.path(str(path))
    return meta


def image_md(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI (markdown with a data URI)."""
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")
