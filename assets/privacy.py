"""The privacy check: no PHI pattern (pipeline.deid) in any text column of the tables, or the run stops.

Report text is de-identified before it is stored (assets/reports.py); this check is the guard behind it, over
every table the data root holds (a new text column, a detail that quotes a file, a table written another way).
It reports where (table, column, first row) and what kind, with a de-identified excerpt: never the finding.
"""

from pathlib import Path

import dagster as dg

from pipeline.deid import scan_tables
from pipeline.tables import read_table


def table_names(root: Path) -> list[str]:
    """Every table under ``<root>/tables``: ``<name>.parquet`` files and sharded ``<name>/`` folders."""
    base = root / "tables"
    if not base.is_dir():
        return []
    return sorted({p.stem if p.is_file() else p.name for p in base.iterdir()
                   if (p.is_file() and p.suffix == ".parquet") or (p.is_dir() and any(p.glob("*.parquet")))})


def phi_check(root: Path, names: list[str] | None = None) -> dg.AssetCheckResult:
    names = table_names(root) if names is None else names
    found = scan_tables((name, read_table(name, root)) for name in names)
    where = found.groupby(["table", "column", "kind"]).size().rename("findings").reset_index() if len(found) else found
    return dg.AssetCheckResult(passed=found.empty, metadata={
        "tables_scanned": dg.MetadataValue.json(names),
        "findings": len(found),
        "where": dg.MetadataValue.md(where.to_markdown(index=False) if len(found) else "none"),
        "rows": dg.MetadataValue.md(found.head(20).to_markdown(index=False) if len(found) else "none"),
    })
