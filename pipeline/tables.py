"""Where tables live under the data root, and how they are read and written.

A table is ``tables/<name>.parquet``, or for sharded tables one folder of Hive-style partitions,
``tables/<name>/shard=<key>/part.parquet`` (the shard is in the path, not in the file), which DuckDB's
``read_parquet('tables/<name>/*/*.parquet')`` reads with a ``shard`` column. ``read_table`` returns either as one
DataFrame, with that column for a sharded table, so readers need not know how it was written. Sharded tables
written before issue 32 (``tables/<name>/<key>.parquet``, ``<stage>-<key>.parquet``) are still read, and writing a
shard removes its files of that layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.atomic import write_parquet

DATA_ENV = "CTGLIP_DATA"
SHARD = "shard"  # the partition column of sharded tables, in their paths: tables/<name>/shard=<key>/
LEGACY_STAGE = {"part": "ingest", "segmentation": "segmentation"}  # <stage>-<key>.parquet files before issue 32


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


def table_path(name: str, root: str | os.PathLike | None = None, shard: str | None = None, part: str = "part") -> Path:
    """Path of a table (a ``.parquet`` file, or the folder of a sharded table when ``shard`` is None and it exists),
    or of one file of a shard (``part``: the table's own file, or a second writer's beside it)."""
    base = data_root(root) / "tables"
    if shard is not None:
        return base / name / f"{SHARD}={shard}" / f"{part}.parquet"
    folder = base / name
    return folder if folder.is_dir() else base / f"{name}.parquet"


def write_table(
    df: pd.DataFrame,
    name: str,
    root: str | os.PathLike | None = None,
    shard: str | None = None,
    part: str = "part",
    schema: pa.Schema | None = None,
) -> Path:
    """Write a table, or one shard's ``part`` of it (its ``shard`` column is dropped: the path holds it), atomically;
    ``schema``: the Arrow schema to write, so that an empty shard's file has the types of the others."""
    if shard is None:
        return write_parquet(df, table_path(name, root), schema)
    path = write_parquet(df.drop(columns=SHARD, errors="ignore"), table_path(name, root, shard, part), schema)
    # the files of this shard in the layout before issue 32
    for old in ([f"{shard}.parquet"] if part == "part" else []) + [f"{LEGACY_STAGE.get(part, part)}-{shard}.parquet"]:
        (path.parent.parent / old).unlink(missing_ok=True)
    return path


def shard_files(name: str, root: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """The files of a sharded table by shard key (empty when the table is not sharded or not written)."""
    folder = data_root(root) / "tables" / name
    found: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.glob(f"{SHARD}=*/*.parquet")):
            found.setdefault(p.parent.name.partition("=")[2], []).append(p)
        for p in sorted(folder.glob("*.parquet")):  # the layout before issue 32: <key>.parquet, <stage>-<key>.parquet
            stage, _, key = p.stem.partition("-")
            found.setdefault(key if stage in LEGACY_STAGE.values() else p.stem, []).append(p)
    return found


def _read_shard(path: Path, key: str, columns: list[str] | None) -> pd.DataFrame:
    frame = pd.read_parquet(path, columns=None if columns is None else [c for c in columns if c != SHARD])
    if len(frame.columns) and (columns is None or SHARD in columns):
        frame[SHARD] = key
    return frame


def read_table(
    name: str, root: str | os.PathLike | None = None, columns: list[str] | None = None, shards: list[str] | None = None
) -> pd.DataFrame:
    """Read a table whole (or, when sharded, the ``shards`` asked for that exist); raise a clear error naming the
    asset to materialize when it is missing."""
    path = table_path(name, root)
    if path.is_dir():
        files = shard_files(name, root)
        frames = [
            _read_shard(p, key, columns)
            for key, paths in sorted(files.items())
            if shards is None or key in shards
            for p in paths
        ]
        frames = [f for f in frames if len(f.columns)]
        # an empty shard's file may hold null-typed columns: only the shards with rows give the dtypes
        frames = [f for f in frames if len(f)] or frames[:1]
        if files:
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    elif path.is_file():
        return pd.read_parquet(path, columns=columns)
    raise FileNotFoundError(
        f"table {name!r} not found under {data_root(root)}/tables; "
        f"materialize it first: dagster asset materialize --select {name}"
    )
