"""Implanted real anatomy as a test split: the synthetic test split's evaluation on lesions painted into real CTs.

``implanted_eval_data(set_dirs, preprocessing, cache_dir)`` reads sets written by ``pipeline.synthetic.implant``
(``write_qa_set`` or its command line) and brings each study to the model's canonical grid the way the own-archive route
would: the CT resampled like ingest does (``pipeline.resample.resample_volume``: RAS, the checkpoint's isotropic
spacing), the organ labels and the tumor mask placed by world coordinates like the precomputed segmenter does
(``pipeline.segment.grid.to_grid_of``). Every organ row takes its status and abnormalities from the set's image truth
(``truth/organ_gold.parquet``), its report status from what the set's report says, and is cropped by the one
preprocessing path (``model.eval.data.crop_rows``). The rows' split is ``REAL_SPLIT``.

``score_implanted(models, with_implanted(base, real), config)`` is ``model.eval.evaluate`` with the implanted studies as
the test split and ``base``'s training and validation splits for everything chosen before testing (AD tasks and
thresholds, the tumor classes, the TS decoder's fine-tuning, the probes' fits), so its figures read like the synthetic
test split's.

The bootstrap resamples ``patient_id``: by default each implanted study is its own "patient" (``cluster="study"``),
since a set is typically made from one or two real scans; such an interval covers the variation of the painted
lesions over a fixed anatomy, not over patients. ``cluster="source"`` groups by source scan instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from model.eval.data import ORGAN_COLUMNS, EvalData, StudyJob, crop_rows, merge_eval_data
from model.eval.evaluate import EvalConfig, EvalResult, evaluate
from model.preprocess import Preprocessing

if TYPE_CHECKING:
    from model.network import CTGlip

REAL_SPLIT = "real_anatomy"


def _canonical(set_dir: Path, key: str, source: str, cache_dir: Path, spacing_mm: float):
    """The study's CT, labels and tumor mask on the canonical grid, written under ``cache_dir``; (paths, labels, ct)."""
    from pipeline.resample import ResampleOptions, resample_volume
    from pipeline.segment.grid import to_grid_of
    from pipeline.volume import Volume, load_nifti, save_nifti

    ct = resample_volume(load_nifti(set_dir / "scans" / f"{key}.nii.gz"), ResampleOptions(spacing=(spacing_mm,) * 3))
    labels = to_grid_of(load_nifti(set_dir / "labels" / f"{source}.nii.gz"), ct)
    lesion = to_grid_of(load_nifti(set_dir / "lesions" / f"{key}.nii.gz"), ct)
    paths = [cache_dir / f"{key}{suffix}.nii.gz" for suffix in ("", "_labels", "_lesions")]
    save_nifti(ct, paths[0], dtype=np.int16)
    save_nifti(Volume(np.asarray(labels.array), ct.affine), paths[1], dtype=np.uint8)
    save_nifti(Volume(np.asarray(lesion.array) > 0, ct.affine), paths[2], dtype=np.uint8)
    return paths, Volume(np.asarray(labels.array, np.uint8), ct.affine), ct


def implanted_eval_data(
    set_dirs: Sequence[str | os.PathLike],
    preprocessing: Preprocessing,
    cache_dir: str | os.PathLike,
    split: str = REAL_SPLIT,
    cluster: str = "study",
    counted_structures: bool = False,
    workers: int | None = None,
) -> tuple[EvalData, pd.DataFrame]:
    """(the organ rows of every study of ``set_dirs``, cropped with ``preprocessing``; their ``organ_stats`` features
    for the no-learning rows, ``model.eval.baseline.stats_features``). ``cache_dir`` receives the canonical volumes."""
    from model.eval.baseline import stats_features
    from pipeline.segment.stats import organ_stats
    from pipeline.vocab import counted, organ

    if cluster not in ("study", "source"):
        raise ValueError(f"cluster must be 'study' or 'source', not {cluster!r}")
    if preprocessing.spacing_mm is None:
        raise ValueError("the checkpoint's preprocessing names no canonical spacing to resample the implanted scans to")
    cache = Path(cache_dir)
    frames, jobs, stats = [], [], []
    for set_dir in map(Path, set_dirs):
        studies = pd.read_parquet(set_dir / "truth" / "studies.parquet")
        gold = pd.read_parquet(set_dir / "truth" / "organ_gold.parquet")
        for s in studies.itertuples():
            rows = gold[gold["study_uid"] == s.study_key]
            if not counted_structures:
                rows = rows[~rows["organ"].map(counted)]
            rows = rows[rows["organ"].map(lambda o: organ(o).index_v2 is not None)]
            said = rows["report_status"].replace({"not_mentioned": "normal"})
            frame = pd.DataFrame(
                {
                    "study_id": s.study_key,
                    "patient_id": s.study_key if cluster == "study" else s.source,
                    "split": split,
                    "organ": rows["organ"].to_numpy(),
                    "index_v2": [organ(o).index_v2 for o in rows["organ"]],
                    "status": rows["image_status"].to_numpy(),
                    "abnormalities": [list(a) for a in rows["abnormalities"]],
                    "report_status": said.to_numpy(),
                    "report_abnormalities": [list(a) for a in rows["report_abnormalities"]],
                    "cut_by_fov": rows["cut_by_fov"].astype(bool).to_numpy(),
                },
                columns=ORGAN_COLUMNS,
            )
            (ct_path, lab_path, les_path), labels, ct = _canonical(
                set_dir, s.study_key, s.source, cache, preprocessing.spacing_mm
            )
            stats.append(organ_stats(s.study_key, labels, ct))
            frames.append((frame.sort_values("index_v2"), ct_path, lab_path, les_path))
    rows = pd.concat([f for f, *_ in frames], ignore_index=True) if frames else pd.DataFrame(columns=ORGAN_COLUMNS)
    start = 0
    for frame, ct_path, lab_path, les_path in frames:
        index = tuple(range(start, start + len(frame)))
        start += len(frame)
        jobs.append(
            StudyJob(
                str(frame["study_id"].iloc[0]) if len(frame) else "",
                ct_path,
                lab_path,
                les_path,
                index,
                tuple(frame["index_v2"].astype(int)),
                tuple(frame["organ"].astype(str)),
                preprocessing,
            )
        )
    organs, crops, _ = crop_rows(rows, [j for j in jobs if j.rows], preprocessing, workers)
    features = stats_features(pd.concat(stats, ignore_index=True)) if stats else pd.DataFrame()
    provenance = {
        "implanted_sets": [str(Path(d).resolve()) for d in set_dirs],
        "preprocessing": preprocessing.to_record(),
        "splits": [split],
        "n_cases": {split: int(organs["study_id"].nunique())},
        "n_organs": {split: int(len(organs))},
        "labels": "image truth of the implanted sets (truth/organ_gold.parquet)",
        "bootstrap_cluster": cluster,
    }
    return EvalData(organs, crops, preprocessing, provenance), features


def with_implanted(base: EvalData, real: EvalData, config: EvalConfig = EvalConfig()) -> EvalData:
    """``base``'s training and validation rows and ``real``'s rows (one split) in one ``EvalData``."""
    test = sorted(set(real.organs["split"]))
    if len(test) != 1:
        raise ValueError(f"the implanted data must hold one split, not {test}")
    return merge_eval_data([base, real], splits=(config.train_split, config.val_split, test[0]))


def score_implanted(
    models: Mapping[str, CTGlip | None], data: EvalData, config: EvalConfig = EvalConfig(), split: str = REAL_SPLIT
) -> EvalResult:
    """``evaluate`` with ``split`` (the implanted rows of ``with_implanted``) as the test split: every choice made
    before testing comes from ``config``'s training and validation splits, as on the synthetic test split."""
    if not (data.organs["split"] == split).any():
        raise ValueError(f"no organ row of split {split!r} to score")
    return evaluate(models, data, replace(config, test_split=split))
