"""DuckDB queries over the Parquet tables: one statement per ``.sql`` file, values bound as parameters.

A parameter named like a table (``$grounded_pairs``) is bound to that table's Parquet path or glob (a sharded
table's ``tables/<name>/*/*.parquet``, whose ``shard=<key>`` folders DuckDB reads as a ``shard`` column);
every other parameter comes from the caller::

    from sql import query
    query("study_coverage", min_pairs=5)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.tables import SHARD, table_path

SQL_DIR = Path(__file__).parent
TABLES = (
    "ct_studies", "rejected_studies", "organ_stats", "report_findings", "grounded_pairs",
    "abnormality_pairs", "pair_exclusions", "study_texts",
)


def names() -> list[str]:
    return sorted(p.stem for p in SQL_DIR.glob("*.sql"))


def text(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no query {name!r}; available: {', '.join(names())}")
    return path.read_text()


def _table_source(name: str, root: str | os.PathLike | None) -> str:
    path = table_path(name, root)
    if path.is_dir():  # a sharded table: Hive-style shard=<key>/ folders, read with their `shard` column
        return str(path / "*" / "*.parquet") if any(path.glob(f"{SHARD}=*")) else str(path / "*.parquet")
    if not path.exists():
        raise FileNotFoundError(f"table {name!r} not found at {path}; materialize it first: dagster asset materialize --select {name}")
    return str(path)


def query(name: str, root: str | os.PathLike | None = None, **params: object) -> pd.DataFrame:
    """Run ``sql/<name>.sql`` and return its rows."""
    sql = text(name)
    wanted = set(re.findall(r"\$([a-z_][a-z0-9_]*)", sql))
    bound = {p: _table_source(p, root) for p in wanted if p in TABLES}
    missing = wanted - set(bound) - set(params)
    if missing:
        raise TypeError(f"query {name!r} needs parameters: {', '.join(sorted(missing))}")
    bound.update({k: v for k, v in params.items() if k in wanted})
    with duckdb.connect() as con:
        return con.execute(sql, bound).df()
