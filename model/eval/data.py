"""What the evaluation protocols read: cases (volume, organ label map, lesion mask) and organ rows.

``load_eval_data`` builds it from the data root: ``tables/grounded_pairs`` (one row per kept
(study, organ) with split, status and abnormality list), ``volumes/``, ``masks/`` and
``lesions/<study_id>.nii.gz``. Every study goes through the one preprocessing path of training
(``model.preprocess``), with the evaluated checkpoint's own record.

Labels: pairs are mined from reports, and reports miss findings and mention some the image does not
show (the benchmark cohort does so on purpose). Where the source carries the image truth
(``source/truth/organ_gold.parquet`` of the synthetic cohort), each organ's status and abnormalities
are taken from it instead (``labels="image"``); elsewhere the report is the only label there is.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model.files import fingerprint
from model.preprocess import Preprocessing, prepare_study

log = logging.getLogger(__name__)

ORGAN_COLUMNS = ["study_id", "patient_id", "split", "organ", "index_v2", "status", "abnormalities"]
SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train"}


@dataclass(frozen=True)
class EvalCase:
    study_id: str
    patient_id: str
    split: str  # "train" / "val" / "test"
    volume: np.ndarray  # (D, H, W) float32, the model's input intensities
    labels: np.ndarray  # (D, H, W) int, `total` (v2) indices
    lesion: np.ndarray  # (D, H, W) bool


@dataclass(frozen=True)
class EvalData:
    cases: tuple[EvalCase, ...]
    organs: pd.DataFrame  # ORGAN_COLUMNS: one row per (study, organ) whose label is in the case's label map
    provenance: dict = field(default_factory=dict)  # data root, table fingerprints, crop, ...

    def split(self, name: str) -> tuple[EvalCase, ...]:
        return tuple(c for c in self.cases if c.split == name)

    def organ_rows(self, name: str) -> pd.DataFrame:
        return self.organs[self.organs["split"] == name].reset_index(drop=True)


def _merge_rows(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, organ): worst status, union of abnormalities."""
    rank = {"normal": 0, "uncertain": 1, "abnormal": 2}
    df = pairs.copy()
    df["split"] = df["split"].map(lambda s: SPLIT_ALIASES.get(s, s))
    df["abnormalities"] = df["abnormalities"].map(lambda a: sorted(set(a)) if a is not None and len(a) else [])
    df["_rank"] = df["status"].map(rank).fillna(0)
    agg = df.sort_values("_rank").groupby(["study_id", "organ"], sort=False).agg(
        patient_id=("patient_id", "first"),
        split=("split", "first"),
        index_v2=("index_v2", "first"),
        status=("status", "last"),
        abnormalities=("abnormalities", lambda s: sorted({a for lst in s for a in lst})),
    )
    return agg.reset_index()[ORGAN_COLUMNS]


def _resolve(root: Path, path: str | None, default: Path) -> Path:
    if path is None or (isinstance(path, float) and np.isnan(path)):
        return default
    p = Path(path)
    return p if p.is_absolute() else root / p


def load_eval_data(
    data_root: str | os.PathLike,
    preprocessing: Preprocessing = Preprocessing(),
    splits: tuple[str, ...] = ("train", "val", "test"),
    max_cases_per_split: int | None = None,
    missing_lesion: str = "empty",
    labels: str = "image",
) -> EvalData:
    """Read cases and organ rows of ``splits`` from the data root, each study through
    ``model.preprocess.prepare_study`` with ``preprocessing`` -- pass the evaluated checkpoint's own
    record (``model.checkpoint.preprocessing_of``): crop around the study's organs, spacing check,
    HU window, and organ rows with fewer than ``min_organ_voxels`` voxels in the crop dropped.

    Only rows of ``splits`` are read from ``grounded_pairs`` (a parquet filter), so a caller that
    leaves ``"test"`` out never loads a test study's labels or images.
    ``missing_lesion``: a study without ``lesions/<study_id>.nii.gz`` is taken as lesion-free
    (``"empty"``) or left out (``"exclude"``).
    ``labels``: ``"image"`` takes status and abnormalities from the source's image truth where there is one
    (only the rows of ``splits`` are read from it), ``"report"`` keeps the pairs' (the reports').
    """
    if labels not in ("image", "report"):
        raise ValueError(f"labels must be 'image' or 'report', not {labels!r}")
    from pipeline.tables import table_path
    from pipeline.volume import load_nifti

    root = Path(data_root).resolve()
    pairs = _read_pairs(root, splits)
    rows = _merge_rows(pairs)
    rows = rows[rows["split"].isin(splits)]
    n_from_image = 0
    if labels == "image":
        rows, n_from_image = image_truth_labels(root, rows)
    paths = pairs.drop_duplicates("study_id").set_index("study_id")[["volume_path", "mask_path"]]

    cases: list[EvalCase] = []
    kept: list[pd.DataFrame] = []
    n_missing = 0
    for split in splits:
        studies = sorted(rows.loc[rows["split"] == split, "study_id"].unique())
        if max_cases_per_split is not None:
            studies = studies[:max_cases_per_split]
        for sid in studies:
            lesion_path = root / "lesions" / f"{sid}.nii.gz"
            if not lesion_path.exists():
                n_missing += 1
                if missing_lesion == "exclude":
                    continue
            ct = load_nifti(_resolve(root, paths.at[sid, "volume_path"], root / "volumes" / f"{sid}.nii.gz"))
            lab = load_nifti(_resolve(root, paths.at[sid, "mask_path"], root / "masks" / f"{sid}.nii.gz"))
            les = load_nifti(lesion_path).array > 0 if lesion_path.exists() else np.zeros(lab.array.shape, bool)
            r = rows[rows["study_id"] == sid]
            p = prepare_study(ct, lab, r["index_v2"].astype(int).tolist(), preprocessing, lesion=les, study_id=str(sid))
            kept.append(r[r["index_v2"].astype(int).isin(p.kept)])
            cases.append(EvalCase(str(sid), str(r["patient_id"].iloc[0]), split, p.volume, p.labels, p.lesion))
    if n_missing:
        log.warning("%d studies have no lesion mask (%s)", n_missing, missing_lesion)
    organs = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=ORGAN_COLUMNS)
    provenance = {
        "data_root": str(root),
        "grounded_pairs_sha256": fingerprint(table_path("grounded_pairs", root)),
        "preprocessing": preprocessing.to_record(),
        "splits": list(splits),
        "n_cases": {s: sum(c.split == s for c in cases) for s in splits},
        "missing_lesion_masks": n_missing,
        "labels": "image truth (source/truth/organ_gold.parquet)" if n_from_image else "reports (grounded_pairs)",
        "organ_rows_from_image_truth": n_from_image,
    }
    return EvalData(tuple(cases), organs.reset_index(drop=True), provenance)


def _read_pairs(root: Path, splits: tuple[str, ...]) -> pd.DataFrame:
    """``grounded_pairs`` rows of ``splits`` only (and their aliases), filtered while reading."""
    from pipeline.tables import table_path

    path = table_path("grounded_pairs", root)
    if not path.exists():
        from pipeline.tables import read_table

        return read_table("grounded_pairs", root)  # raises its clear error
    names = sorted({*splits, *(a for a, s in SPLIT_ALIASES.items() if s in splits)})
    return pd.read_parquet(path, filters=[("split", "in", names)])


def image_truth_labels(root: Path, rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``rows`` with status and abnormalities from the image truth of ``root/source/truth/organ_gold.parquet``
    where it has the (study, organ), and how many rows it had. Only the gold rows of ``rows``' studies are read
    (matched by the study pseudonym, under this process's key), so a caller without test rows reads no test label."""
    from pipeline.ids import pseudonym

    path = root / "source" / "truth" / "organ_gold.parquet"
    if not path.is_file() or rows.empty:
        return rows, 0
    uids = pd.read_parquet(path, columns=["study_uid"])["study_uid"].dropna().unique()
    wanted = set(rows["study_id"])
    keep = [u for u in uids if pseudonym("study", u) in wanted]
    if not keep:
        return rows, 0
    gold = pd.read_parquet(path, columns=["study_uid", "organ", "image_status", "abnormalities"],
                           filters=[("study_uid", "in", keep)])
    gold["study_id"] = gold["study_uid"].map(lambda u: pseudonym("study", u))
    truth = gold.set_index(["study_id", "organ"])
    keys = pd.MultiIndex.from_arrays([rows["study_id"], rows["organ"]])
    hit = keys.isin(truth.index)
    out = rows.copy()
    matched = truth.reindex(keys[hit])
    out.loc[hit, "status"] = matched["image_status"].to_numpy()
    out.loc[hit, "abnormalities"] = pd.Series([sorted(a) if a is not None else [] for a in matched["abnormalities"]],
                                              index=out.index[hit], dtype=object)
    return out, int(hit.sum())
