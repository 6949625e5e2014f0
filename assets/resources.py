"""Resources: the data root, the archive source (synthetic cohort, your own DICOM or NIfTI, CT-RATE), the segmenter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from pipeline.tables import data_root


class DataRoot(dg.ConfigurableResource):
    """Where every table, volume, mask and checkpoint is written."""

    path: str = Field(default="", description="Data root; empty means $CTGLIP_DATA, else ./data (resolved at run time).")

    def root(self) -> Path:
        return data_root(self.path or None)


@dataclass(frozen=True)
class SourcePaths:
    dicom_dir: Path | None
    nifti_manifest: Path | None
    reports_csv: Path | None
    masks_manifest: Path | None
    truth_dir: Path | None


class ArchiveSource(dg.ConfigurableResource):
    """The studies to ingest. The default is the embedded synthetic cohort, generated under <data root>/source."""

    kind: Literal["synthetic", "dicom", "nifti", "ctrate", "real_anatomy"] = Field(
        default="synthetic",
        description="synthetic: the embedded cohort; dicom: a folder of DICOM files; nifti: a manifest CSV of .nii.gz scans; "
        "ctrate: a CT-RATE release folder (or a flat folder of its volumes), read by pipeline.ctrate; real_anatomy: lesions "
        "painted into a folder of real CTs with organ masks (pipeline.synthetic.implant), written under <data>/source.",
    )
    dicom_dir: str = Field(default="", description="kind=dicom: folder scanned recursively for DICOM files (any layout).")
    nifti_manifest: str = Field(default="", description="kind=nifti: CSV with scan_path, patient_key, study_key, report_key.")
    ctrate_dir: str = Field(default="", description="kind=ctrate: the CT-RATE folder ({train,valid}/<patient>/<scan>/*.nii.gz and the release CSVs).")
    ctrate_split: Literal["train", "valid"] = Field(default="train", description="kind=ctrate: the CT-RATE split to ingest.")
    anatomy_dir: str = Field(default="", description="kind=real_anatomy: folder of real CTs, <name>.nii.gz beside <name>_seg.nii.gz "
                             "(TotalSegmentator 'total' labels) or <name>_seg/ (organ masks); n_studies studies are painted per scan.")
    reports_csv: str = Field(default="", description="RIS export CSV with AccessionNumber and ReportText columns.")
    masks_manifest: str = Field(default="", description="Precomputed masks manifest CSV: mask_path, format, and the study named by StudyInstanceUID, SeriesInstanceUID, study_key (NIfTI) or study_id (stu-… from ct_studies); empty: none.")
    n_studies: int = Field(default=24, description="kind=synthetic: number of studies to generate; kind=real_anatomy: per real CT.")
    seed: int = Field(default=0, description="kind=synthetic and real_anatomy: generator seed.")
    reserved_phrasing: bool = Field(
        default=False, description="kind=synthetic: write reports with the evaluation-only paraphrase bank."
    )
    preset: Literal["demo", "benchmark"] = Field(
        default="demo", description="kind=synthetic: 'demo' = the quick demo cohort; 'benchmark' = the cohort that needs "
        "learning: varied appearance, organ sizes and lesions, imperfect reports, the reserved phrasing on validation and "
        "test (pipeline.synthetic.cohort.PRESETS).",
    )
    split_ratios: list[float] = Field(
        default=[], description="kind=synthetic: the train/val/test shares the pair tables will be made with "
        "(pair_tables' split_ratios; set both alike), so that evaluation reports get the reserved phrasing; "
        "empty = the pair tables' defaults.",
    )
    appearance: Literal["", "uniform", "varied"] = Field(
        default="", description="kind=synthetic: empty = the preset's; 'uniform' = one HU per organ and one noise level for "
        "everyone (the demo); 'varied' = per-study contrast phase, per-patient organ HU, texture, slice blur and noise, "
        "recorded as ground truth.",
    )

    def paths(self, root: Path) -> SourcePaths:
        if self.kind == "synthetic":
            src = root / "source"
            return SourcePaths(src / "dicom", None, src / "reports.csv", src / "masks" / "manifest.csv", src / "truth")

        def opt(p: str) -> Path | None:
            return Path(p).expanduser().resolve() if p else None

        if self.kind == "real_anatomy":
            if not self.anatomy_dir:
                raise ValueError("ArchiveSource(kind='real_anatomy') needs anatomy_dir")
            src = root / "source"  # where load_eval_data looks for the image truth (truth/organ_gold.parquet)
            return SourcePaths(None, src / "scans.csv", src / "reports.csv", src / "masks.csv", src / "truth")
        if self.kind == "ctrate":
            if not self.ctrate_dir:
                raise ValueError("ArchiveSource(kind='ctrate') needs ctrate_dir")
            src = self.ctrate_source(root)  # written by the source_archive asset from the release's files
            return SourcePaths(None, src / "manifest.csv", src / "reports.csv", opt(self.masks_manifest), None)
        if self.kind == "dicom" and not self.dicom_dir:
            raise ValueError("ArchiveSource(kind='dicom') needs dicom_dir")
        if self.kind == "nifti" and not self.nifti_manifest:
            raise ValueError("ArchiveSource(kind='nifti') needs nifti_manifest")
        return SourcePaths(opt(self.dicom_dir), opt(self.nifti_manifest), opt(self.reports_csv), opt(self.masks_manifest), None)

    def ctrate_source(self, root: Path) -> Path:
        """kind=ctrate: the folder holding the manifest and reports derived from the release."""
        return root / "source" / "ctrate" / self.ctrate_split
