"""CT-RATE as a source: the release read into one row per volume, and the NIfTI manifest ingest takes.

The release layout (huggingface.co/datasets/ibrahimhamamci/CT-RATE), with or without ``dataset/``:

    {train,valid}[_fixed]/<patient>/<scan>/<volume>.nii.gz      train/train_123/train_123_a/train_123_a_1.nii.gz
    radiology_text_reports/{train,validation}_reports.csv       VolumeName, Findings_EN, Impressions_EN, ...
    metadata/{train,validation}_metadata.csv                    VolumeName, RescaleSlope, RescaleIntercept,
                                                                XYSpacing, ZSpacing, ...
    multi_abnormality_labels/{train,valid}_predicted_labels.csv VolumeName and the 18 labels (0/1)

A flat folder of ``.nii.gz`` volumes (CSV files beside them optional) is read too. The rules, each
recorded per volume:

- HU (``hu_rule``): a NIfTI header with its own scaling (scl_slope/scl_inter) is applied by the reader and
  the metadata rescale is never applied on top (``nifti_scaling``). Otherwise the stored values decide:
  air in the air band (-1150..-850 HU) as stored means HU (``stored_hu``: CT-RATE v2, whose values are HU
  while its metadata still lists slope 1 / intercept -1024); air there only after the metadata's
  RescaleSlope/RescaleIntercept means raw values (``metadata_rescale``: the first release); neither is
  ``stored_unverified`` (ingest's HU check then judges). The first slice is read for this, the whole
  volume only when it shows no air either way.
- spacing (``spacing_rule``): the NIfTI header wins where it carries geometry (it is what the voxels were
  written with; the metadata's ZSpacing can be a slice thickness), and a disagreement with the metadata
  is recorded; a blank header (no qform/sform and unit voxels, or an identity affine) takes XYSpacing/ZSpacing and,
  when given, ImageOrientationPatient/ImagePositionPatient from the metadata (``metadata``), with array axis i along
  the DICOM row direction as DICOM-to-NIfTI converters write it.
- ids: volume ``train_123_a_1`` is patient ``train_123``, scan (our study) ``train_123_a``, reconstruction 1.
- reconstructions of one scan are one study: the one covering the most (1 cm bins), then the thinnest
  slices, then the lowest reconstruction number is ``chosen``; the others say why not.
- reports: ``FINDINGS: <Findings_EN>`` and ``IMPRESSION: <Impressions_EN>`` joined (CT-CLIP joins the two),
  "Not given." dropped.
- problems (``problem``; such a volume is never ``chosen``): unreadable or not 3D, fewer bytes than the header
  asks for (``volume_problem``: a cut-off download), a RescaleSlope/RescaleIntercept that is not a number, no
  report row (or an empty one) where the split has a reports CSV, spacing unknown.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.arrayproxy import ArrayProxy

from pipeline.atomic import atomic_path
from pipeline.vocab import CTRATE_LABELS
from pipeline.volume import read_image, spacing_of

log = logging.getLogger(__name__)

SPLITS = {"train": ("train",), "valid": ("valid", "validation")}  # split -> spellings in the release's file names
COLUMNS = [
    "volume_path", "volume_name", "split", "patient_key", "study_key", "reconstruction", "report_text", *CTRATE_LABELS,
    "hu_rule", "rescale_slope", "rescale_intercept", "spacing_rule", "spacing_x", "spacing_y", "spacing_z",
    "affine", "n_slices", "chosen", "choice", "problem",
]  # fmt: skip
MANIFEST_COLUMNS = [
    "scan_path",
    "patient_key",
    "study_key",
    "report_key",
    "rescale_slope",
    "rescale_intercept",
    "affine",
    "hu_rule",
    "spacing_rule",
]

_NAME = re.compile(r"^(?P<patient>(?P<split>train|valid)_\d+)_(?P<scan>[A-Za-z]+)_(?P<recon>\d+)$")
_AIR = (-1150.0, -850.0)
_MIN_AIR = 0.005  # fraction of sampled voxels in the air band for a reading to count
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class HuDecision:
    slope: float  # applied to the values the NIfTI reader returns
    intercept: float
    rule: str  # nifti_scaling / stored_hu / metadata_rescale / stored_unverified


def scan_ctrate(root: str | os.PathLike, split: str = "train") -> pd.DataFrame:
    """One row per volume of ``split`` (``train`` or ``valid``) under ``root``: the columns of ``COLUMNS``.

    Labels are nullable integers (missing where the label CSV has no row); ``problem`` is empty for a
    usable volume and says why otherwise; exactly one volume per study is ``chosen`` among usable ones.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no CT-RATE folder at {root}")
    volumes = _volume_files(root, split)
    reports = _table(root, split, "reports")
    meta = _table(root, split, "metadata")
    labels = _table(root, split, "labels")
    rows = [_volume_row(path, split, reports, meta, labels) for path in volumes]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for label in CTRATE_LABELS:
        frame[label] = pd.to_numeric(frame[label], errors="coerce").astype("Int8")
    frame = _choose(frame)
    log.info(
        "CT-RATE %s: %d volumes, %d studies, %d patients, %d with a problem",
        split,
        len(frame),
        frame["study_key"].nunique(),
        frame["patient_key"].nunique(),
        int((frame["problem"] != "").sum()),
    )
    return frame.sort_values("volume_name", ignore_index=True)


def write_ctrate_source(
    root: str | os.PathLike, split: str, out_dir: str | os.PathLike
) -> tuple[Path, Path, pd.DataFrame]:
    """The chosen volumes as a NIfTI manifest (``manifest.csv``) and their reports as a RIS export
    (``reports.csv``: AccessionNumber, ReportText) in ``out_dir``, for the ingest and report stages."""
    frame = scan_ctrate(root, split)
    chosen = frame[frame["chosen"]]
    out = Path(out_dir)
    manifest = pd.DataFrame({
        "scan_path": chosen["volume_path"], "patient_key": chosen["patient_key"], "study_key": chosen["study_key"],
        "report_key": chosen["study_key"], "rescale_slope": chosen["rescale_slope"],
        "rescale_intercept": chosen["rescale_intercept"],
        "affine": chosen["affine"], "hu_rule": chosen["hu_rule"], "spacing_rule": chosen["spacing_rule"],
    }, columns=MANIFEST_COLUMNS)  # fmt: skip
    reports = pd.DataFrame({"AccessionNumber": chosen["study_key"], "ReportText": chosen["report_text"]})
    reports = reports[reports["ReportText"] != ""]
    paths = out / "manifest.csv", out / "reports.csv"
    for table, path in zip((manifest, reports), paths):
        with atomic_path(path, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
    return paths[0], paths[1], frame


# -- files --------------------------------------------------------------------------------------


def _volume_files(root: Path, split: str) -> list[Path]:
    for base in (root / "dataset", root):
        for name in (split, f"{split}_fixed", *(f"{s}_fixed" for s in SPLITS[split]), *SPLITS[split]):
            if (base / name).is_dir():
                return sorted((base / name).rglob("*.nii.gz"))
    # a flat folder: CT-RATE-named volumes of other splits are left out, other names kept
    flat = sorted(root.glob("*.nii.gz"))
    return [p for p in flat if (m := _NAME.match(_stem(p))) is None or m["split"] == split]


def _table(root: Path, split: str, kind: str) -> pd.DataFrame | None:
    """The release CSV of ``kind`` (reports / metadata / labels) for ``split``, indexed by VolumeName."""
    folders = [
        d for base in (root, root / "dataset") if base.is_dir() for d in (base, *sorted(base.iterdir())) if d.is_dir()
    ]
    for folder in dict.fromkeys(folders):
        for csv in sorted(folder.glob("*.csv")):
            words = set(re.split(r"[^a-z]+", csv.stem.lower()))
            if kind.rstrip("s") in {w.rstrip("s") for w in words} and words & set(SPLITS[split]):
                table = pd.read_csv(csv, dtype=str, keep_default_na=False)
                if "VolumeName" not in table.columns:
                    raise ValueError(f"{csv}: no VolumeName column; found {list(table.columns)[:8]}")
                table["VolumeName"] = table["VolumeName"].map(_stem)
                return table.drop_duplicates("VolumeName", keep="last").set_index("VolumeName")
    log.warning("CT-RATE %s: no %s CSV found under %s", split, kind, root)
    return None


def _stem(name: str | Path) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", Path(str(name)).name)


# -- one volume ---------------------------------------------------------------------------------


def _volume_row(path: Path, split: str, reports, meta, labels) -> dict:
    name = _stem(path)
    m = _NAME.match(name)
    patient, study, recon = (m["patient"], f"{m['patient']}_{m['scan']}", int(m["recon"])) if m else (name, name, 1)
    row: dict = {
        "volume_path": str(path),
        "volume_name": name,
        "split": split,
        "patient_key": patient,
        "study_key": study,
        "reconstruction": recon,
        "report_text": _report(reports, name),
        "problem": "",
    }
    lab = labels.loc[name] if labels is not None and name in labels.index else None
    row.update(
        {
            label: (lab[label] if lab is not None and label in lab.index and lab[label] != "" else None)
            for label in CTRATE_LABELS
        }
    )
    info = meta.loc[name] if meta is not None and name in meta.index else None
    try:
        img = read_image(path)
        if len(img.shape) != 3:
            raise ValueError(f"shape {img.shape} is not 3D")
        incomplete = volume_problem(path, img)
        if incomplete:
            raise ValueError(incomplete)
        hu = decide_hu(img, _rescale(info))
        affine, spacing_rule = decide_geometry(img, info)
    except Exception as err:  # noqa: BLE001 - one unreadable volume is one row with its problem
        row.update(
            hu_rule="",
            rescale_slope=1.0,
            rescale_intercept=0.0,
            spacing_rule="",
            affine="",
            spacing_x=np.nan,
            spacing_y=np.nan,
            spacing_z=np.nan,
            n_slices=0,
            problem=f"{type(err).__name__}: {str(err)[:200]}",
        )
        return row
    spacing = spacing_of(affine)
    row.update(
        hu_rule=hu.rule,
        rescale_slope=hu.slope,
        rescale_intercept=hu.intercept,
        spacing_rule=spacing_rule,
        affine=json.dumps(np.round(affine, 6).tolist()) if spacing_rule.startswith("metadata") else "",
        spacing_x=float(spacing[0]),
        spacing_y=float(spacing[1]),
        spacing_z=float(spacing[2]),
        n_slices=int(img.shape[2]),
    )
    problems = [spacing_rule] if spacing_rule.startswith("unknown") else []
    problems += _metadata_problems(info) + _report_problems(reports, name, row["report_text"])
    row["problem"] = "; ".join(problems)
    return row


def volume_problem(path: Path, img: nib.Nifti1Image) -> str:
    """ "" when the file holds the bytes its header asks for; else what is missing. nibabel reads the header
    only, and the first slice HU is decided on, so a cut-off download would pass until ingest reads it whole.
    A ``.nii.gz`` is judged by its gzip trailer (ISIZE: the uncompressed size mod 2**32), a cheap read of the
    last 4 bytes that a truncated stream fails unless its last bytes happen to spell the size."""
    header = img.header
    offset = int(cast(ArrayProxy, img.dataobj).offset)  # the array proxy of a loaded file, not yet read
    need = offset + int(np.prod(img.shape)) * np.dtype(header.get_data_dtype()).itemsize
    size = path.stat().st_size
    if path.suffix != ".gz":
        return "" if size >= need else f"truncated: the file holds {size:,} of the {need:,} bytes its header needs"
    with open(path, "rb") as fh:
        if size < 18 or fh.read(2) != b"\x1f\x8b":
            return "not a gzip file"
        fh.seek(size - 4)
        isize = int.from_bytes(fh.read(4), "little")
    if isize != need % 2**32:
        return f"truncated or corrupt: the gzip stream does not end with the size its header needs ({need:,} bytes)"
    return ""


def _metadata_problems(info: pd.Series | None) -> list[str]:
    """A rescale the metadata gives but not as a number: it cannot be applied, nor trusted to be unneeded."""
    if info is None:
        return []
    out = []
    for column in ("RescaleSlope", "RescaleIntercept"):
        value = str(info.get(column, "") or "").strip()
        if value:
            try:
                float(value)
            except ValueError:
                out.append(f"metadata {column} is not a number ({value[:40]!r})")
    return out


def _report_problems(reports: pd.DataFrame | None, name: str, text: str) -> list[str]:
    """A volume whose split has a reports CSV but no usable report for it (without a CSV, _table warned)."""
    if reports is None or text:
        return []
    return [
        "no report row for this volume"
        if name not in reports.index
        else "its report row has no findings or impression text"
    ]


def _report(reports: pd.DataFrame | None, name: str) -> str:
    if reports is None or name not in reports.index:
        return ""
    r = reports.loc[name]
    parts = []
    for header, column in (("FINDINGS", "Findings_EN"), ("IMPRESSION", "Impressions_EN")):
        text = str(r.get(column, "") or "").strip()
        if text and text.lower() != "not given.":
            parts.append(f"{header}: {text}")
    return "\n".join(parts)


def _rescale(info: pd.Series | None) -> tuple[float, float] | None:
    try:
        # info None (no metadata row) raises the TypeError caught below
        return float(info["RescaleSlope"]), float(info["RescaleIntercept"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def _air(values: np.ndarray) -> float:
    return float(np.count_nonzero((values >= _AIR[0]) & (values <= _AIR[1]))) / max(values.size, 1)


def decide_hu(img: nib.Nifti1Image, rescale: tuple[float, float] | None) -> HuDecision:
    """Which rescale turns what the NIfTI reader returns into HU (see the module doc)."""
    proxy = cast(ArrayProxy, img.dataobj)  # the array proxy of a loaded file, not yet read
    slope, inter = proxy.slope, proxy.inter  # nibabel's: 1 and 0 when the header has none
    if (slope, inter) != (1.0, 0.0):
        return HuDecision(1.0, 0.0, "nifti_scaling")
    # Stored values are asked first: raw CT values (intercept -1024) sit at or above about -50 apart from a
    # constant padding value, so air at -1000 as stored means HU; the rescaled reading is only a fallback
    # because a rescale moves soft tissue of an HU volume into the air band (40 - 1024 = -984).
    for sample in (lambda: img.dataobj[..., 0], lambda: img.dataobj):  # the first slice, else the whole volume
        values = np.asanyarray(sample())
        if _air(values) >= _MIN_AIR:
            return HuDecision(1.0, 0.0, "stored_hu")
        if rescale is not None and rescale != (1.0, 0.0) and _air(values * rescale[0] + rescale[1]) >= _MIN_AIR:
            return HuDecision(*rescale, "metadata_rescale")
    return HuDecision(1.0, 0.0, "stored_unverified")


def _floats(text: object) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", str(text or ""))]


def decide_geometry(img: nib.Nifti1Image, info: pd.Series | None) -> tuple[np.ndarray, str]:
    """The voxel-to-RAS affine and the rule that chose it (see the module doc)."""
    header = img.header
    zooms = np.asarray(header.get_zooms()[:3], dtype=float)
    # blank: no qform/sform and unit voxels, or an identity affine (what writing an array with np.eye(4) gives);
    # a real CT at exactly 1 mm, axis-aligned, with its origin at 0 is not met in practice
    no_codes = int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0
    blank = (no_codes and np.allclose(zooms, 1.0)) or np.allclose(img.affine, np.eye(4))
    xy = _floats(info.get("XYSpacing")) if info is not None else []
    z = _floats(info.get("ZSpacing")) if info is not None else []
    meta = np.array([xy[0], xy[-1], z[0]]) if xy and z else None
    if not blank:
        affine = np.asarray(img.affine, dtype=float)
        spacing = np.asarray(spacing_of(affine))
        if meta is None:
            return affine, "header"
        if np.allclose(spacing, meta, rtol=0.01):
            return affine, "header (metadata agrees)"
        return (
            affine,
            f"header (metadata XYSpacing/ZSpacing {meta.round(4).tolist()} differ from the header's "
            f"{spacing.round(4).tolist()} mm; header kept)",
        )
    if meta is None or info is None:  # (the metadata spacing comes from info)
        return np.asarray(img.affine, dtype=float), "unknown: blank NIfTI header and no metadata spacing"
    iop = _floats(info.get("ImageOrientationPatient"))
    ipp = _floats(info.get("ImagePositionPatient"))
    row_dir, col_dir = (
        (np.array(iop[:3]), np.array(iop[3:6])) if len(iop) == 6 else (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    )
    rotation = np.stack([row_dir, col_dir, np.cross(row_dir, col_dir)], axis=1) * meta
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ rotation
    affine[:3, 3] = _LPS_TO_RAS @ (np.array(ipp[:3]) if len(ipp) >= 3 else np.zeros(3))
    oriented = "ImageOrientationPatient" if len(iop) == 6 else "axial orientation assumed (no ImageOrientationPatient)"
    return affine, f"metadata (blank NIfTI header; XYSpacing/ZSpacing, {oriented})"


# -- one study per scan ---------------------------------------------------------------------------


def _choose(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["chosen"], frame["choice"] = False, ""
    usable = frame[frame["problem"] == ""]
    for _, group in usable.groupby("study_key", sort=False):
        coverage = np.round(group["n_slices"] * group["spacing_z"] / 10.0)
        order = group.assign(_cov=coverage).sort_values(
            ["_cov", "spacing_z", "reconstruction"], ascending=[False, True, True]
        )
        best = order.index[0]
        frame.loc[best, "chosen"] = True
        frame.loc[best, "choice"] = (
            "chosen: widest coverage (1 cm bins), then thinnest slices, then lowest reconstruction"
        )
        for idx in order.index[1:]:
            frame.loc[idx, "choice"] = (
                f"another reconstruction of the scan was chosen ({frame.loc[best, 'volume_name']}); this one covers "
                f"{frame.loc[idx, 'n_slices'] * frame.loc[idx, 'spacing_z']:.0f} mm "
                f"at {frame.loc[idx, 'spacing_z']:.2f} mm"
            )
    return frame
