"""What every column of every table means: the one place the Parquet IO manager takes column descriptions from.

The Dagster UI shows them in each table asset's column schema; docs/DATA.md says the same in prose, and
tests/test_table_io.py checks that every column a run writes is described here and named in that page.
"""

from __future__ import annotations

_STUDY = "Pseudonymous study id (stu-…), a keyed hash of the StudyInstanceUID or study key."
_PATIENT = "Pseudonymous patient id (pat-…), a keyed hash of the PatientID or patient key."
_SPLIT = "train, val or test: per patient, by a stable salted hash (pair_tables' split_ratios)."
_SHARD = "The shard (shard-00 … shard-07) the study belongs to by a stable hash of study_id; in the path, shard=<key>/."
_ORGAN = "Organ: a TotalSegmentator v2 class name (pipeline.vocab)."
_INDEX_V2 = "The organ's label in TotalSegmentator's `total` (v2) class map, as in the label maps."
_PAIR = "Hash of study and organ: one per (study, organ) pair."

COLUMNS: dict[str, dict[str, str]] = {
    "ct_studies": {
        "study_id": _STUDY,
        "patient_id": _PATIENT,
        "report_id": "Pseudonym of the accession number (rep-…): links the study to its report.",
        "series_id": "Pseudonym of the chosen series' SeriesInstanceUID (ser-…); empty for a NIfTI scan.",
        "volume_path": "Canonical volume, relative to the data root: volumes/<study_id>.nii.gz (RAS, target spacing, int16 HU).",
        "spacing_native_i": "Native voxel spacing along i, in mm.",
        "spacing_native_j": "Native voxel spacing along j, in mm.",
        "spacing_native_k": "Native voxel spacing along k (between slices), in mm.",
        "spacing_x": "Canonical spacing along x (R), in mm.",
        "spacing_y": "Canonical spacing along y (A), in mm.",
        "spacing_z": "Canonical spacing along z (S), in mm.",
        "shape_native_i": "Native voxels along i.",
        "shape_native_j": "Native voxels along j.",
        "shape_native_k": "Native voxels along k (slices).",
        "shape_x": "Canonical voxels along x.",
        "shape_y": "Canonical voxels along y.",
        "shape_z": "Canonical voxels along z.",
        "orientation": "Axis codes of the native volume (e.g. LPS), before reorientation to RAS.",
        "n_slices": "Slices of the chosen series.",
        "body_region": "Body region from BodyPartExamined, the series description and the z extent.",
        "manufacturer": "Scanner manufacturer (DICOM), empty when unknown.",
        "kvp": "Tube voltage in kV (DICOM), NaN when unknown.",
        "source_format": "dicom or nifti.",
        "hu_min": "Lowest HU of the canonical volume.",
        "hu_max": "Highest HU of the canonical volume.",
        "fingerprint": "Hash of the study's input files and ingest options: an unchanged study is skipped on a re-run.",
        "shard": _SHARD,
        "slice_thickness": "SliceThickness (DICOM) in mm, NaN when absent.",
        "tilt_deg": "Gantry tilt in degrees (0 when none or corrected).",
        "corrections": "What ingest corrected on the way (list of str): tilt, rescale or affine from a manifest, HU and spacing rules.",
        "skipped_series": "Other series of the study and why they were not chosen (list of 'uid: reason').",
    },
    "rejected_studies": {
        "study_id": "Pseudonymous id of the study, or of the folder or manifest line, that could not be used.",
        "stage": "Where it was rejected: the ingest step (scan, read, validate, ...) or segmentation.",
        "reason": "Why, as a short code (truncated_file, no_ct_series, missing_slices, masks_manifest_row, ...).",
        "detail": "The reason in words (never an identifier).",
        "source_format": "dicom or nifti; empty for a segmentation rejection.",
        "shard": _SHARD,
    },
    "organ_stats": {
        "study_id": _STUDY,
        "organ": _ORGAN,
        "index_v2": _INDEX_V2,
        "voxels": "Voxels of the organ on the canonical grid.",
        "volume_ml": "Organ volume in ml.",
        "bbox_vox": "Bounding box in canonical voxels: 6 ints (i0, j0, k0, i1, j1, k1).",
        "bbox_mm": "Bounding box in RAS mm: 6 floats.",
        "centroid_mm": "Centroid in RAS mm: 3 floats.",
        "hu_mean": "Mean HU inside the organ.",
        "hu_std": "HU standard deviation inside the organ.",
        "cut_by_fov": "The organ touches the edge of the field of view.",
        "cut_face_ratio": "The organ's area on the cut face over its largest parallel cross-section; 0 when not cut.",
        "quality_flags": "List of str: cut_by_fov, too_small, fragmented.",
        "shard": _SHARD,
    },
    "report_findings": {
        "report_id": "Pseudonym of the report's accession number (rep-…).",
        "organ": _ORGAN + " Empty for a region finding.",
        "region": "Where a finding without an organ mask sits (lymph_node, pleura, mediastinum, spine, ...); empty for organs.",
        "group": "The organ's vocabulary group (kidney, lung, ...); empty for a region finding.",
        "status": "normal, abnormal or uncertain.",
        "abnormality": "Canonical abnormality name (mass, cyst, ...); empty for a normal finding.",
        "sentence": "The sentence as written, de-identified, without its organ header.",
        "section": "findings, impression, addendum or body (no header).",
        "negated": "Canonical abnormalities negated for this organ in this sentence (list).",
        "size_mm": "Largest dimension of the nearest measurement, in mm.",
        "header": "The organ header the sentence sits under (LIVER), if any.",
        "sentence_index": "Position of the sentence in the report.",
        "side": "left or right for a region finding named with a side.",
    },
    "report_index": {
        "report_id": "Pseudonym of the report's accession number (rep-…).",
        "n_chars": "Characters of the de-identified report text.",
        "n_findings": "Organ-level findings the rules read from it.",
        "problem": "Why the report could not be read (empty, not English, decoding), or empty.",
        "has_text": "The report has text to read.",
    },
    "grounded_pairs": {
        "pair_id": _PAIR,
        "patient_id": _PATIENT,
        "study_id": _STUDY,
        "organ": _ORGAN,
        "group": "The organ's vocabulary group.",
        "index_v2": _INDEX_V2,
        "index_v1": "The organ's label in TotalSegmentator v1, where it has one.",
        "text": "The organ's report sentences (text_source report), or the filled normal template.",
        "text_source": "report: the organ's sentences; template: an organ in the image the report does not mention.",
        "status": "The organ-level report status: normal, uncertain or abnormal (normal for a template).",
        "abnormalities": "Canonical abnormality names the report gives the organ (list).",
        "volume_path": "Canonical volume, relative to the data root.",
        "mask_path": "Organ label map, relative to the data root: masks/<study_id>.nii.gz.",
        "bbox_vox": "Bounding box in canonical voxels (6 ints).",
        "bbox_mm": "Bounding box in RAS mm (6 floats).",
        "volume_ml": "Organ volume in ml.",
        "quality_flags": "organ_stats' quality flags (list).",
        "cut_by_fov": "The organ touches the edge of the field of view.",
        "cut_face_ratio": "Area on the cut face over the largest parallel cross-section; 0 when not cut.",
        "cut_rule": "The cut-organ rule in force: exclude, keep_flagged or keep_if_inside:<max ratio>.",
        "split": _SPLIT,
    },
    "abnormality_pairs": {
        "pair_id": _PAIR,
        "patient_id": _PATIENT,
        "study_id": _STUDY,
        "organ": _ORGAN,
        "index_v2": _INDEX_V2,
        "abnormality": "One canonical abnormality of the pair.",
        "positive_text": "The organ's sentences that carry it.",
        "negatives": "Dictionary negatives: other abnormalities the rules allow for the organ, '<abnormality> of the <organ>' (list).",
        "split": _SPLIT,
    },
    "pair_exclusions": {
        "study_id": _STUDY,
        "patient_id": _PATIENT,
        "organ": _ORGAN + " Empty for a region finding or a study without report.",
        "reason": "study_without_report, cut_by_fov, too_small, quality_flagged:<flags>, described_not_segmented or region_without_mask.",
        "status": "The organ's report status, where the report mentions it.",
        "region": "The region of a region_without_mask finding.",
    },
    "study_texts": {
        "study_id": _STUDY,
        "patient_id": _PATIENT,
        "text": "Findings and impression sentences in order, deduplicated: the global CLIP baseline's text.",
        "split": _SPLIT,
    },
    "study_embeddings": {
        "study_id": _STUDY,
        "organ": _ORGAN + " Or whole_study: the normalised mean of the study's organs.",
        "embedding": "The grounded model's L2-normalised embedding (list of floats).",
        "shard": _SHARD,
    },
}


def describe(table: str, column: str) -> str:
    """The column's description, or empty where none is written (the UI then shows none)."""
    return COLUMNS.get(table, {}).get(column, "")
