"""Report assets: organ-level findings from the RIS export, and which studies have a usable report."""


import dagster as dg
import pandas as pd
from pydantic import Field

from assets.metadata import table_metadata
from assets.resources import ArchiveSource, DataRoot
from pipeline.ids import pseudonym
from pipeline.report import extract_table_checked
from pipeline.tables import table_path, write_table

GROUP = "reports"


class ReportSettings(dg.Config):
    workers: int = Field(default=1, description="Processes for rule extraction (1 is fastest below a few thousand reports).")
    text_column: str = Field(default="ReportText", description="Report text column of the RIS export.")
    id_column: str = Field(default="AccessionNumber", description="Column linking a report to its study (pseudonymized on read).")


def read_reports(path, text_column: str, id_column: str) -> pd.DataFrame:
    """The RIS export with the accession number replaced by its pseudonym (report_id) at once."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    missing = {text_column, id_column} - set(raw.columns)
    if missing:
        raise dg.Failure(f"{path}: missing column(s) {sorted(missing)}; found {list(raw.columns)}")
    out = pd.DataFrame({
        "report_id": [pseudonym("report", a) if a.strip() else None for a in raw[id_column]],
        "text": raw[text_column],
    })
    return out.dropna(subset=["report_id"]).drop_duplicates("report_id", keep="last").reset_index(drop=True)


@dg.multi_asset(
    specs=[
        dg.AssetSpec("report_findings", group_name=GROUP, deps=["source_archive"], description="One row per organ-level finding: organ, status, abnormality, sentence, section, negations, size."),
        dg.AssetSpec("report_index", group_name=GROUP, deps=["source_archive"], description="One row per report: findings count, characters, and any problem (empty, not English, decoding)."),
    ],
)
def report_tables(context: dg.AssetExecutionContext, config: ReportSettings, data: DataRoot, source: ArchiveSource):
    root = data.root()
    csv = source.paths(root).reports_csv
    if csv is None or not csv.is_file():
        reports = pd.DataFrame({"report_id": pd.Series(dtype=str), "text": pd.Series(dtype=str)})
        context.log.warning(f"no reports CSV at {csv}; every study will be recorded as without report")
    else:
        reports = read_reports(csv, config.text_column, config.id_column)
    findings, problems = extract_table_checked(reports, "text", "report_id", workers=config.workers)
    index = reports[["report_id"]].copy()
    index["n_chars"] = reports["text"].str.len()
    index["n_findings"] = index["report_id"].map(findings.groupby("report_id").size()).fillna(0).astype(int)
    index["problem"] = index["report_id"].map(problems.set_index("report_id")["problem"] if len(problems) else {})
    index["has_text"] = index["n_chars"] > 0
    write_table(findings, "report_findings", root)
    write_table(index, "report_index", root)
    context.log.info(f"{len(reports)} reports -> {len(findings)} findings; {index['problem'].notna().sum()} with a problem")
    meta = table_metadata(findings, table_path("report_findings", root))
    if len(findings):
        meta["status"] = dg.MetadataValue.json(findings["status"].value_counts().to_dict())
        meta["abnormalities"] = dg.MetadataValue.json(findings["abnormality"].value_counts().head(20).to_dict())
    yield dg.MaterializeResult(asset_key="report_findings", metadata=meta)
    imeta = table_metadata(index, table_path("report_index", root))
    imeta["problems"] = dg.MetadataValue.json(index["problem"].value_counts().to_dict())
    yield dg.MaterializeResult(asset_key="report_index", metadata=imeta)
