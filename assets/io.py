"""IO managers: tables as Parquet (``table_io``), small values as JSON (``json_io``), both under the data root.

Assets return their tables as DataFrames and take upstream tables as function parameters; where and how a table
is stored is decided here once, in the layout of ``pipeline.tables`` that ``sql/``, ``model/`` and users' pandas
code read:

- a table is ``<data root>/tables/<asset>.parquet``;
- a sharded (partitioned) table is one folder of Hive-style partitions, ``tables/<asset>/shard=<key>/part.parquet``,
  so that DuckDB's ``read_parquet('tables/<asset>/*/*.parquet')`` reads every shard with a ``shard`` column. The
  column lives in the path only. An asset that runs several shards in one run (the single-run backfills of
  ``make run`` and ``--partition-range``) returns one DataFrame with a ``shard`` column, and each shard of the run
  gets its rows (an empty file where it has none, so a re-run replaces every shard it ran);
- every file is written atomically (``pipeline.atomic``): a killed run leaves the previous table, never half of one.

Each output records, once, its row count and column schema (``dagster/row_count``, ``dagster/column_schema``: the
Arrow types of the file as DuckDB sees them, with the descriptions of ``assets/columns.py``), a preview and the path.
Inputs load as DataFrames: a sharded upstream as the shards the run asks for (all of them for an unpartitioned
asset or a check), with its ``shard`` column; shards never materialized are left out with a warning, and a run
that finds none of them fails with what to materialize.

Why not Dagster's ``UPathIOManager``: it stores one file per partition key without the Hive ``key=`` folder, refuses an
output that covers several partitions (our single-run backfills), and cannot rename atomically on object stores;
the data root here is a local or shared file system that every machine mounts (docs/CLUSTER.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from assets.metadata import table_metadata
from pipeline.atomic import write_json
from pipeline.tables import SHARD, data_root, read_table, shard_files, table_path, write_table


# definition metadata of a table made by a multi-asset that cannot make it alone: the assets to select together
MATERIALIZED_WITH = "materialized_with"


def _name(key: dg.AssetKey) -> str:
    return "__".join(key.path)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Tables as Parquet under ``<data root>/tables``; sharded assets in Hive-style ``shard=<key>/`` folders."""

    path: str = Field(default="", description="Data root; empty means $CTGLIP_DATA, else ./data (resolved at run time).")
    preview_rows: int = Field(default=5, description="Rows of each table shown in the UI's preview.")

    def root(self) -> Path:
        return data_root(self.path or None)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: the table IO manager stores DataFrames, got {type(obj).__name__}")
        name, root = _name(context.asset_key), self.root()
        if context.has_asset_partitions:
            keys = sorted(context.asset_partition_keys)
            if SHARD not in obj.columns:
                if len(keys) > 1:
                    raise ValueError(f"{name}: a table for {len(keys)} shards needs a `{SHARD}` column saying whose each row is")
                obj = obj.assign(**{SHARD: keys[0]})
            strays = sorted(set(obj[SHARD].astype(str)) - set(keys))
            if strays:
                raise ValueError(f"{name}: rows of shards {strays} that this run does not materialize ({keys})")
            schema = arrow_schema(obj.drop(columns=SHARD), name, root)
            for key in keys:
                write_table(obj[obj[SHARD] == key], name, root, key, schema=schema)
            path = table_path(name, root)
        else:
            schema = arrow_schema(obj, name, root)
            path = write_table(obj, name, root, schema=schema)
        context.add_output_metadata(table_metadata(name, obj, schema, path, self.preview_rows, context.has_asset_partitions))

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        name, root = _name(context.asset_key), self.root()
        if not context.has_asset_partitions:
            try:
                return read_table(name, root)
            except FileNotFoundError:
                raise dg.Failure(_not_materialized(name, root, [], _selection(context))) from None
        keys = sorted(context.asset_partition_keys)
        missing = [k for k in keys if k not in shard_files(name, root)]
        if len(missing) == len(keys):
            raise dg.Failure(_not_materialized(name, root, missing, _selection(context)))
        if missing:
            context.log.warning(f"{name}: shards {', '.join(missing)} have not been materialized; read without them")
        return read_table(name, root, shards=keys)


def arrow_schema(df: pd.DataFrame, name: str, root: Path) -> pa.Schema:
    """One Arrow schema for every file of a table, so DuckDB reads its shards as one: the frame's, where a column
    that holds no value to type it by (an empty shard, a column of nulls) takes its type from a file already there."""
    schema = pa.Schema.from_pandas(df, preserve_index=False)
    untyped = {f.name for f in schema if pa.types.is_null(f.type)}
    files = [p for paths in shard_files(name, root).values() for p in paths] or [table_path(name, root)]
    for file in files:
        if not untyped:
            break
        if file.is_file():
            for field in pq.read_schema(file):
                if field.name in untyped and not pa.types.is_null(field.type):
                    schema = schema.set(schema.get_field_index(field.name), field)
                    untyped.discard(field.name)
    return schema


def _selection(context: dg.InputContext) -> str:
    """The assets to select to make the upstream: those its step makes together (`MATERIALIZED_WITH` in its
    definition metadata, for a multi-asset that cannot make one alone), else the asset itself."""
    upstream = context.upstream_output.definition_metadata if context.upstream_output is not None else None
    return str((upstream or {}).get(MATERIALIZED_WITH) or _name(context.asset_key))


def _not_materialized(name: str, root: Path, shards: list[str], selection: str) -> str:
    where = f"shards {shards[0]} … {shards[-1]} of {name}" if len(shards) > 1 else f"{shards[0]} of {name}" if shards else name
    partition = (f" --partition {shards[0]}" if len(shards) == 1 else f" --partition-range {shards[0]}...{shards[-1]}") if shards else ""
    return (f"{where} not found under {root / 'tables'}: materialize it first, "
            f"`dagster asset materialize --select {selection}{partition}` (or from the UI, or `make run`)")


class JsonIOManager(dg.ConfigurableIOManager):
    """Small asset values (checkpoint references) at ``<data root>/assets/<asset>.json``: readable, diffable, never
    pickled, so downstream assets take them as inputs."""

    path: str = ""  # empty: the data root ($CTGLIP_DATA or ./data), resolved at run time

    def _file(self, key: dg.AssetKey) -> Path:
        return data_root(self.path or None) / "assets" / f"{_name(key)}.json"

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        write_json(obj, self._file(context.asset_key))

    def load_input(self, context: dg.InputContext) -> dict:
        path = self._file(context.asset_key)
        if not path.is_file():
            raise dg.Failure(f"{context.asset_key.to_user_string()} has not been materialized (no {path}); materialize it first")
        return json.loads(path.read_text())
