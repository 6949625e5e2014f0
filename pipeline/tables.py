"""Where tables live under the data root, and how they are read and written.

A table is ``tables/<name>.parquet``, or for sharded tables ``tables/<name>/<shard>.parquet``;
``read_table`` returns either as one DataFrame, so readers need not know how it was written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_parquet

DATA_ENV = "CTGLIP_DATA"


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data root: ``path`` if given, else ``$CTGLIP_DATA``, else ``./data`` (resolved when called)."""
    return Path(path or os.environ.get(DATA_ENV) or "data").resolve()


def stored_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """A file under the data root as tables store it: relative to the root (POSIX), so a copied or moved data
    folder, or one mounted elsewhere, still finds its files; a file outside the root keeps its absolute path."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def resolve_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A path read from a table: relative ones are under the data root (``root``, else $CTGLIP_DATA)."""
    p = Path(path)
    return p if p.is_absolute() else data_root(root) / p


def table_path(name: str, root: str | os.PathLike | None = None, shard: str | None = None) -> Path:
    """Path of a table (a ``.parquet`` file, or the folder of a sharded table when ``shard`` is None and it exists)."""
    base = data_root(root) / "tables"
    if shard is not None:
        return base / name / f"{shard}.parquet"
    folder = base / name
    return folder if folder.is_dir() else base / f"{name}.parquet"


def write_table(df: pd.DataFrame, name: str, root: str | os.PathLike | None = None, shard: str | None = None) -> Path:
    return write_parquet(df, table_path(name, root, shard))


def read_table(name: str, root: str | os.PathLike | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a table whole; raise a clear error naming the asset to materialize when it is missing."""
    path = table_path(name, root)
    if path.is_dir():
        parts = sorted(path.glob("*.parquet"))
        if parts:
            frames = [pd.read_parquet(p, columns=columns) for p in parts]
            frames = [f for f in frames if len(f.columns)]
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    elif path.is_file():
        return pd.read_parquet(path, columns=columns)
    raise FileNotFoundError(
        f"table {name!r} not found under {data_root(root)}/tables; "
        f"materialize it first: dagster asset materialize --select {name}"
    )
