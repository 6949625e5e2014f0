"""The privacy check: no PHI pattern (pipeline.deid) in any text column of the tables, or the run stops.

Report text is de-identified before it is stored (assets/reports.py); this check is the guard behind it, over
every table the data root holds (a new text column, a detail that quotes a file, a table written another way).
It reports where (table, column, first row) and what kind, with a de-identified excerpt: never the finding.
"""

from pathlib import Path
from typing import Callable

import dagster as dg
import pandas as pd

from pipeline.deid import scan_tables
from pipeline.tables import read_table, shard_files


def table_names(root: Path) -> list[str]:
    """Every table under ``<root>/tables``: ``<name>.parquet`` files and sharded ``<name>/`` folders."""
    base = root / "tables"
    if not base.is_dir():
        return []
    return sorted({p.stem if p.is_file() else p.name for p in base.iterdir()
                   if (p.is_file() and p.suffix == ".parquet") or (p.is_dir() and shard_files(p.name, root))})


def phi_check(names: list[str], load: Callable[[str], pd.DataFrame]) -> dg.AssetCheckResult:
    """Scan the tables ``names``, each loaded by ``load`` when its turn comes (one in memory at a time)."""
    found = scan_tables((name, load(name)) for name in names)
    where = found.groupby(["table", "column", "kind"]).size().rename("findings").reset_index() if len(found) else found
    return dg.AssetCheckResult(passed=found.empty, metadata={
        "tables_scanned": dg.MetadataValue.json(names),
        "findings": len(found),
        "where": dg.MetadataValue.md(where.to_markdown(index=False) if len(found) else "none"),
        "rows": dg.MetadataValue.md(found.head(20).to_markdown(index=False) if len(found) else "none"),
    })


def phi_check_all(root: Path) -> dg.AssetCheckResult:
    """Every table under ``<root>/tables``, those no asset declares included: read from the files, not as inputs."""
    return phi_check(table_names(root), lambda name: read_table(name, root))
