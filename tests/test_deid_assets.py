"""Issue 29, item 1, through the real Dagster machinery: a RIS export with names, dates, phone numbers and ids
goes through report_tables and pair_tables; no table, preview, check or log of the runs holds any of them, and
the blocking privacy checks pass. A table written with PHI in it fails them, without quoting it."""

from __future__ import annotations

import re

import dagster as dg
import numpy as np
import pandas as pd

from assets import pairs, reports
from assets.io import ParquetIOManager
from assets.partitions import SHARDS
from assets.privacy import table_names
from assets.resources import ArchiveSource, DataRoot
from pipeline.ids import pseudonym
from pipeline.tables import read_table, write_table
from pipeline.volume import Volume, save_nifti

REPORT = ("FINDINGS: The liver of Jane Doeberg (DOB 03/14/1961, phone 555-867-5309) shows a 2 cm mass. The spleen is normal. "
          "MRN 00482913. IMPRESSION: Liver mass, compared with the CT dated 12.03.2019. Discussed with Dr. Alan Whitcombe "
          "on 04/02/2023.")
SECRETS = ["Jane", "Doeberg", "1961", "867-5309", "00482913", "12.03.2019", "Whitcombe", "04/02/2023"]


def _graph(root):
    """A RIS export, one study's ct_studies row, organ_stats of its liver and spleen, and its (empty) files."""
    (root / "ris.csv").parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"AccessionNumber": ["ACC1"], "ReportText": [REPORT]}).to_csv(root / "ris.csv", index=False)
    sid, rid = pseudonym("study", "S1"), pseudonym("report", "ACC1")
    write_table(pd.DataFrame({"study_id": [sid], "patient_id": [pseudonym("patient", "P1")], "report_id": [rid],
                              "volume_path": [f"volumes/{sid}.nii.gz"], "shard": ["shard-00"]}), "ct_studies", root, "shard-00")
    stats = [{"study_id": sid, "organ": organ, "index_v2": index, "volume_ml": 500.0, "bbox_vox": [0, 0, 0, 2, 2, 2],
              "bbox_mm": [0.0] * 6, "cut_by_fov": False, "cut_face_ratio": 0.0, "quality_flags": []}
             for organ, index in (("liver", 5), ("spleen", 1))]
    write_table(pd.DataFrame(stats), "organ_stats", root, "shard-00")
    for folder in ("volumes", "masks"):
        save_nifti(Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4)), root / folder / f"{sid}.nii.gz")
    return {"data": DataRoot(path=str(root)), "source": ArchiveSource(kind="dicom", dicom_dir=str(root / "none"),
                                                                      reports_csv=str(root / "ris.csv")),
            "table_io": ParquetIOManager(path=str(root))}


# the tables written above by hand, standing in for the ingest and segmentation assets: pair_tables loads them
WRITTEN = [dg.AssetSpec(name, partitions_def=SHARDS).with_io_manager_key("table_io") for name in ("ct_studies", "organ_stats")]


def _run(root, resources, instance, deid_dates="placeholder"):
    results = [
        dg.materialize([reports.report_tables, *reports.CHECKS], resources=resources, instance=instance,
                       run_config={"ops": {"report_tables": {"config": {"deid_dates": deid_dates}}}}),
        dg.materialize([*WRITTEN, reports.report_tables, pairs.pair_tables, *pairs.CHECKS], selection=[pairs.pair_tables],
                       resources=resources, instance=instance),
    ]
    for result in results:
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())  # the blocking privacy checks included
    return results


def test_report_text_is_deidentified_in_every_table_preview_and_log(tmp_path):
    root = tmp_path / "data"
    resources = _graph(root)
    with dg.DagsterInstance.ephemeral() as instance:
        results = _run(root, resources, instance)
        logs = "\n".join(str(e) for r in results for e in instance.all_logs(r.run_id))
    assert "no_phi_in_reports" in logs and "no_phi_in_tables" in logs
    stored = "\n".join(read_table(name, root).to_csv() for name in table_names(root) if name not in ("ct_studies", "organ_stats"))
    for secret in SECRETS:
        assert secret not in stored and secret not in logs, secret
    liver = read_table("grounded_pairs", root).set_index("organ").loc["liver", "text"]
    assert "The liver of [NAME] (DOB [DATE], phone [PHONE]) shows a 2 cm mass." in liver
    texts = read_table("study_texts", root)["text"].item()
    assert "[NAME]" in texts and "[DATE]" in texts
    sentences = read_table("report_findings", root)["sentence"]
    assert sentences.str.contains(r"\[NAME\]").any()


def test_dates_shift_per_patient_in_the_asset(tmp_path):
    root = tmp_path / "data"
    resources = _graph(root)
    with dg.DagsterInstance.ephemeral() as instance:
        _run(root, resources, instance, deid_dates="shift")
    texts = read_table("study_texts", root)["text"].item()
    assert "[DATE]" not in texts and len(set(re.findall(r"\[DATE (\d{4}-\d{2}-\d{2})\]", texts))) == 2
    for secret in (*SECRETS[:2], "03/14/1961", "1961-03-14", "2019-03-12", *SECRETS[5:]):  # the year may survive a shift
        assert secret not in texts


def test_privacy_checks_fail_on_a_table_with_phi_without_quoting_it(tmp_path):
    root = tmp_path / "data"
    write_table(pd.DataFrame({"report_id": ["rep-0000000000000001"], "sentence": ["The liver of Jane Doeberg is enlarged."]}),
                "report_findings", root)
    write_table(pd.DataFrame({"report_id": ["rep-0000000000000001"], "problem": [None]}), "report_index", root)
    write_table(pd.DataFrame({"study_id": ["stu-0000000000000001"], "detail": ["call 555-867-5309"]}), "rejected_studies", root, "x")
    data = DataRoot(path=str(root))
    reported = {"report_findings": read_table("report_findings", root), "report_index": read_table("report_index", root)}
    for result, findings in ((reports.no_phi_in_reports(**reported), 1), (pairs.no_phi_in_tables(data=data), 2)):
        assert not result.passed and result.metadata["findings"].value == findings
        shown = str(result.metadata)
        assert "Doeberg" not in shown and "867" not in shown and "[NAME]" in shown
