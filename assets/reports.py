"""Report assets: organ-level findings from the RIS export, and which studies have a usable report."""

from pathlib import Path
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.ingest import source_archive
from assets.privacy import phi_check
from assets.queues import CPU
from assets.resources import ArchiveSource, DataRoot
from pipeline.deid import DeidConfig, deidentify_reports
from pipeline.ids import pseudonym
from pipeline.report import extract_table_checked
from pipeline.report.accuracy import score
from pipeline.report.labels import SCORED, dev_csv, read_labelled, score_reports
from pipeline.tables import read_table

GROUP = "reports"


class ReportSettings(dg.Config):
    workers: int = Field(default=1, description="Processes for rule extraction (1 is fastest below a few thousand reports).")
    text_column: str = Field(default="ReportText", description="Report text column of the RIS export.")
    id_column: str = Field(default="AccessionNumber", description="Column linking a report to its study (pseudonymized on read).")
    ctrate_dev_csv: str = Field(default="", description="Real reports with manual CT-RATE labels to score the rules on "
                                "(shown as metadata); empty = ../shared/realdata/reports_ctrate_dev where present, else skipped.")
    deid_dates: Literal["placeholder", "shift"] = Field(default="placeholder", description="Dates in report text: 'placeholder' "
                                                        "writes [DATE]; 'shift' moves each by its patient's offset, as [DATE 2020-11-02] "
                                                        "(patients from ct_studies; [DATE] where a report has no study or a date no year).")
    deid_max_shift_days: int = Field(default=DeidConfig.max_shift_days, ge=1, description="'shift': the largest offset in days (never 0).")
    deid_day_first: bool = Field(default=False, description="Read 03/04/2020 as 3 April (dotted dates are always day first).")

    def deid(self) -> DeidConfig:
        return DeidConfig(dates=self.deid_dates, max_shift_days=self.deid_max_shift_days, day_first=self.deid_day_first)


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


def _patients(root: Path) -> dict[str, str]:
    """report_id -> patient_id from ct_studies, for per-patient date shifts (empty before ingest ran). Read here, not
    taken as an input: only `deid_dates: shift` needs it, and the reports do not wait for ingest otherwise."""
    try:
        studies = read_table("ct_studies", root, columns=["report_id", "patient_id"])
    except FileNotFoundError:
        return {}
    studies = studies[studies["report_id"].astype(bool)]
    return dict(zip(studies["report_id"], studies["patient_id"]))


def _accuracy_metadata(findings: pd.DataFrame, report_ids: set, truth_dir) -> dict:
    """Where the source carries a gold (the synthetic cohort), score the rules against it."""
    gold_path = truth_dir / "organ_gold.parquet" if truth_dir else None
    if gold_path is None or not gold_path.is_file():
        return {}
    gold = pd.read_parquet(gold_path)
    if "report_abnormalities" in gold:  # the rules read the report: score them on what it says, not on the image
        gold["abnormalities"] = gold["report_abnormalities"]
    gold["report_id"] = [pseudonym("report", a) for a in gold["accession"]]
    gold = gold[gold["report_id"].isin(report_ids)]  # a study whose report never arrived is not a rule error
    metrics = score(findings, gold.drop(columns=["accession"]), report_column="report_id")
    worst = metrics.worst_sentences.head(15)
    if worst.empty:
        worst = metrics.errors[["organ", "gold_status", "pred_status", "sentences"]].head(15)
    out = {
        "accuracy": dg.MetadataValue.json({k: v for k, v in metrics.summary().items()}),
        "status_macro_f1": float(metrics.status_macro_f1),
        "abnormality_f1": float(metrics.abnormality_f1),
        "worst_sentences": dg.MetadataValue.md(worst.to_markdown(index=False) if len(worst) else "no errors"),
    }
    studies_path = truth_dir / "studies.parquet"
    if studies_path.is_file():  # the held-out paraphrases (validation and test reports of the benchmark cohort)
        studies = pd.read_parquet(studies_path, columns=["accession", "reserved_phrasing"])
        reserved = set(studies.loc[studies["reserved_phrasing"].astype(bool), "accession"])
        held = gold[gold["accession"].isin(reserved)] if "accession" in gold else gold.iloc[:0]
        if len(held):
            rm = score(findings, held.drop(columns=["accession"]), report_column="report_id")
            out["reserved_phrasing_accuracy"] = dg.MetadataValue.json(rm.summary())
            out["reserved_phrasing_status_macro_f1"] = float(rm.status_macro_f1)
            out["reserved_phrasing_abnormality_f1"] = float(rm.abnormality_f1)
    return out


def _ctrate_metadata(path: Path) -> dict:
    """Where real reports with manual CT-RATE labels are at hand, the rules' report-level F1 on them."""
    if not path.is_file():
        return {}
    scores = score_reports(read_labelled(path))
    wide = scores.pivot(index="label", columns="part", values="f1").loc[list(SCORED), ["tuned", "checked", "all"]]
    wide.insert(0, "positives", scores[scores["part"] == "all"].set_index("label")["support"].loc[list(SCORED)])
    macro = scores.groupby("part")["f1"].mean()
    return {
        "ctrate_macro_f1": float(macro["all"]),
        "ctrate_macro_f1_checked_quarter": float(macro["checked"]),
        "ctrate_per_label": dg.MetadataValue.md(
            f"Real CT-RATE reports ({path.name}), report-level F1 over {len(SCORED)} labels; tuned = 3/4 of them, "
            f"checked = the other quarter, scored apart but tuned on too since: no part of this set is held out.\n\n"
            + wide.to_markdown(floatfmt=".3f") + f"\n\n**macro F1**: tuned {macro['tuned']:.3f}, checked quarter "
            f"{macro['checked']:.3f}, all {macro['all']:.3f}"),
    }


@dg.multi_asset(
    outs={
        "report_findings": dg.AssetOut(group_name=GROUP, io_manager_key="table_io", is_required=False, description="One row per organ-level finding: organ, status, abnormality, sentence, section, negations, size."),
        "report_index": dg.AssetOut(group_name=GROUP, io_manager_key="table_io", is_required=False, description="One row per report: findings count, characters, and any problem (empty, not English, decoding)."),
    },
    deps=[source_archive],  # the RIS export is a file of the source, not a table
    can_subset=True,
    op_tags=CPU,
)
def report_tables(context: dg.AssetExecutionContext, config: ReportSettings, data: DataRoot, source: ArchiveSource):
    root = data.root()
    csv = source.paths(root).reports_csv
    if csv is None or not csv.is_file():
        reports = pd.DataFrame({"report_id": pd.Series(dtype=str), "text": pd.Series(dtype=str)})
        context.log.warning(f"no reports CSV at {csv}; every study will be recorded as without report")
    else:
        reports = read_reports(csv, config.text_column, config.id_column)
    # names, dates, numbers and addresses leave the text here, before any table, preview or log holds it
    reports, replaced = deidentify_reports(reports, config.deid(), _patients(root) if config.deid_dates == "shift" else None)
    context.log.info("de-identified report text: " + ", ".join(f"{n} {kind}" for kind, n in replaced.items() if n) if any(replaced.values())
                     else "de-identified report text: nothing found")
    findings, problems = extract_table_checked(reports, "text", "report_id", workers=config.workers)
    index = reports[["report_id"]].copy()
    index["n_chars"] = reports["text"].str.len()
    index["n_findings"] = index["report_id"].map(findings.groupby("report_id").size()).fillna(0).astype(int)
    index["problem"] = index["report_id"].map(problems.set_index("report_id")["problem"] if len(problems) else {})
    index["has_text"] = index["n_chars"] > 0
    context.log.info(f"{len(reports)} reports -> {len(findings)} findings; {index['problem'].notna().sum()} with a problem")
    # the table IO manager writes each selected table and records its rows, schema and a preview
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    if "report_findings" in selected:
        meta = {"deidentified": dg.MetadataValue.json({"dates": config.deid_dates, "replaced": replaced})}
        meta.update(_accuracy_metadata(findings, set(reports["report_id"]), source.paths(root).truth_dir))
        meta.update(_ctrate_metadata(Path(config.ctrate_dev_csv) if config.ctrate_dev_csv else dev_csv()))
        if len(findings):
            meta["status"] = dg.MetadataValue.json(findings["status"].value_counts().to_dict())
            meta["abnormalities"] = dg.MetadataValue.json(findings["abnormality"].value_counts().head(20).to_dict())
        yield dg.Output(findings, output_name="report_findings", metadata=meta)
    if "report_index" in selected:
        yield dg.Output(index, output_name="report_index", metadata={"problems": dg.MetadataValue.json(index["problem"].value_counts().to_dict())})


@dg.asset_check(asset="report_findings", additional_ins={"report_index": dg.AssetIn()}, blocking=True, op_tags=CPU,
                description="No PHI pattern (names, dates, numbers, addresses, e-mail) in any text column of report_findings "
                "and report_index (pipeline.deid).")
def no_phi_in_reports(report_findings: pd.DataFrame, report_index: pd.DataFrame) -> dg.AssetCheckResult:
    tables = {"report_findings": report_findings, "report_index": report_index}
    return phi_check(list(tables), tables.__getitem__)


CHECKS = [no_phi_in_reports]
