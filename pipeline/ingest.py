"""Archive-level ingest: DICOM archive (any layout) and/or a NIfTI manifest -> canonical volumes
plus the ``ct_studies`` and ``rejected_studies`` tables (see docs/ARCHITECTURE.md).

One public entry, `ingest_archive`; `ingest_study` / `ingest_nifti_scan` do the work of one study
and never raise for a bad study: a rejection is a row (stage, reason, detail), and the rest go on.
`read_nifti` and `to_canonical` are the steps from a study to its canonical volume that inference
(`model.inference`) takes too, so a study is read, checked and resampled the same way for both.
Only pseudonymous ids (`pipeline.ids.pseudonym`) reach tables, file names and log lines.
Re-runs skip studies whose inputs (file paths, sizes, mtimes) and options did not change: the
fingerprint is stored beside the volume as ``volumes/<study_id>.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter

import numpy as np
import pandas as pd

from pipeline.atomic import write_json
from pipeline.claims import Claim, conflicts
from pipeline.dicom.errors import IngestError
from pipeline.dicom.geometry import GeometryOptions, check_geometry
from pipeline.dicom.load import LoadTimings, load_series
from pipeline.dicom.scan import SliceHeader, group_studies, scan_dicom
from pipeline.dicom.select import SelectOptions, select_series
from pipeline.hu import HuCheck, check_hu
from pipeline.ids import pseudonym
from pipeline.resample import ResampleOptions, resample_volume
from pipeline.tables import stored_path
from pipeline.volume import Volume, load_nifti, save_nifti

log = logging.getLogger(__name__)

# bump when the output of a study changes for the same inputs (3: non-finite and constant volumes rejected, a stray
# slice dropped instead of the study)
INGEST_VERSION = "3"

CT_STUDIES_COLUMNS = [
    "study_id", "patient_id", "report_id", "series_id", "volume_path",
    "spacing_native_i", "spacing_native_j", "spacing_native_k", "spacing_x", "spacing_y", "spacing_z",
    "shape_native_i", "shape_native_j", "shape_native_k", "shape_x", "shape_y", "shape_z",
    "orientation", "n_slices", "body_region", "manufacturer", "kvp", "source_format",
    "hu_min", "hu_max", "fingerprint", "shard", "slice_thickness", "tilt_deg", "corrections", "skipped_series",
]  # fmt: skip
REJECTED_COLUMNS = ["study_id", "stage", "reason", "detail", "source_format", "shard"]
# optional NIfTI manifest columns, for sources whose side-car metadata a reader has already judged
# (pipeline.ctrate): a rescale to HU of the stored values, a voxel-to-RAS affine (JSON 4x4) replacing a
# blank header, and the rules that chose them, recorded in the study's `corrections`
MANIFEST_OPTIONAL = ("rescale_slope", "rescale_intercept", "affine", "hu_rule", "spacing_rule")


@dataclass(frozen=True)
class IngestConfig:
    data_root: Path
    dicom_root: Path | None = None  # default: <data_root>/source/dicom
    nifti_manifest: Path | None = (
        None  # CSV: scan_path (relative to the CSV), patient_key, study_key, report_key (+ MANIFEST_OPTIONAL)
    )
    resample: ResampleOptions = ResampleOptions()
    select: SelectOptions = SelectOptions()
    geometry: GeometryOptions = GeometryOptions()
    workers: int = 2  # processes for per-study work (and the header scan)
    n_shards: int = 1

    @staticmethod
    def paper(data_root: str | os.PathLike, **kw) -> IngestConfig:
        return IngestConfig(data_root=Path(data_root), resample=ResampleOptions.paper(), **kw)

    @staticmethod
    def demo(data_root: str | os.PathLike, **kw) -> IngestConfig:
        return IngestConfig(data_root=Path(data_root), resample=ResampleOptions.demo(), **kw)

    @property
    def dicom_dir(self) -> Path:
        return Path(self.dicom_root) if self.dicom_root is not None else Path(self.data_root) / "source" / "dicom"

    @property
    def volumes_dir(self) -> Path:
        return Path(self.data_root) / "volumes"

    def options_key(self) -> str:
        """What about the config changes a study's output (not paths, workers or shards)."""
        return json.dumps(
            {
                "v": INGEST_VERSION,
                "resample": asdict(self.resample),
                "select": asdict(self.select),
                "geometry": asdict(self.geometry),
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class IngestResult:
    ct_studies: pd.DataFrame
    rejected_studies: pd.DataFrame
    n_unchanged: int = 0  # studies skipped because their fingerprint matched
    timings: dict = field(default_factory=dict)  # seconds summed over studies, per step


@dataclass(frozen=True)
class StudyOutcome:
    row: dict | None
    rejection: dict | None
    timings: dict


def shard_of(study_id: str, n_shards: int) -> str:
    """Stable shard name (``shard-00`` ...) of a study id: a partition key for independent runs."""
    if n_shards < 1:
        raise ValueError("n_shards must be >= 1")
    h = int(hashlib.sha256(study_id.encode()).hexdigest()[:12], 16)
    return f"shard-{h % n_shards:02d}"


_REGIONS = {
    "HEAD": "head", "BRAIN": "head", "SKULL": "head", "NECK": "neck", "HEADNECK": "head_neck",
    "CHEST": "chest", "THORAX": "chest", "LUNG": "chest", "ABDOMEN": "abdomen", "ABD": "abdomen",
    "PELVIS": "pelvis", "ABDOMENPELVIS": "abdomen_pelvis", "ABDPELVIS": "abdomen_pelvis",
    "CHESTABDOMEN": "chest_abdomen", "CHESTABDOMENPELVIS": "chest_abdomen_pelvis", "CAP": "chest_abdomen_pelvis",
    "THORAXABDOMENPELVIS": "chest_abdomen_pelvis", "TORSO": "chest_abdomen_pelvis", "WHOLEBODY": "whole_body",
}  # fmt: skip


def body_region(body_part: str, z_extent_mm: float, description: str = "") -> str:
    """From BodyPartExamined (or the series description), else a z-extent heuristic."""
    key = re.sub(r"[^A-Z]", "", (body_part or "").upper())
    if key in _REGIONS:
        return _REGIONS[key]
    # free text such as "CHEST_ABD_PELVIS" or a series description "CT Thorax/Abdomen"
    for words in (key, (description or "").upper()):
        found = [
            r
            for r, ws in (("chest", ("CHEST", "THORAX")), ("abdomen", ("ABD",)), ("pelvis", ("PELV",)))
            if any(w in words for w in ws)
        ]
        if found:
            return "_".join(found)
    if z_extent_mm >= 1000:
        return "whole_body"
    if z_extent_mm >= 550:
        return "chest_abdomen_pelvis"
    return "unknown"


def _fingerprint(files: list[tuple[str, int, int]], config: IngestConfig) -> str:
    h = hashlib.sha256(config.options_key().encode())
    for path, size, mtime in sorted(files):
        h.update(f"{path}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:32]


def _cached(config: IngestConfig, study_id: str, fingerprint: str) -> dict | None:
    side = config.volumes_dir / f"{study_id}.json"
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("fingerprint") != fingerprint:
        return None
    if rec.get("status") == "ok" and not (config.volumes_dir / f"{study_id}.nii.gz").exists():
        return None
    return rec


def to_canonical(volume: Volume, options: ResampleOptions, timings: dict | None = None) -> tuple[Volume, HuCheck]:
    """A read study -> its canonical volume (RAS, ``options.spacing``, HU clipped, int16) and its HU check.

    The values must be an image (finite, not constant) of plausible CT HU (``check_hu``), else ``IngestError`` at stage
    ``hu_check``. ``timings`` (seconds) gets ``hu_check`` and ``resample``."""
    timings = {} if timings is None else timings
    t0 = perf_counter()
    values = np.asarray(volume.array)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise IngestError(
            "hu_check",
            "non_finite",
            f"the volume holds {int((~np.isfinite(values)).sum())} non-finite "
            "values (NaN or infinity): it cannot be read as CT",
        )
    if values.size == 0 or values.min() == values.max():
        raise IngestError(
            "hu_check",
            "constant_volume",
            f"the volume is constant ({values.min() if values.size else 'empty'}): there is no image in it",
        )
    hu = check_hu(values)
    timings["hu_check"] = perf_counter() - t0
    if not hu.ok:
        raise IngestError("hu_check", hu.reason, hu.detail)
    t0 = perf_counter()
    canon = resample_volume(volume, options)
    timings["resample"] = perf_counter() - t0
    return canon, hu


def _finish(
    volume: Volume, config: IngestConfig, ids: dict, fingerprint: str, timings: dict, extra: dict
) -> StudyOutcome:
    """Canonical volume, write, row; shared by the DICOM and NIfTI paths."""
    canon, hu = to_canonical(volume, config.resample, timings)
    study_id = ids["study_id"]
    path = config.volumes_dir / f"{study_id}.nii.gz"
    t0 = perf_counter()
    save_nifti(canon, path, dtype=np.int16)
    timings["write"] = perf_counter() - t0
    m = volume.meta
    native_sp, canon_sp = volume.spacing, canon.spacing
    z_extent = float(volume.shape[2] * native_sp[2])
    row = {
        **ids,
        "volume_path": stored_path(path, config.data_root),
        "spacing_native_i": native_sp[0], "spacing_native_j": native_sp[1],
        "spacing_native_k": m.get("native_spacing", native_sp)[2],
        "spacing_x": canon_sp[0], "spacing_y": canon_sp[1], "spacing_z": canon_sp[2],
        "shape_native_i": volume.shape[0], "shape_native_j": volume.shape[1], "shape_native_k": volume.shape[2],
        "shape_x": canon.shape[0], "shape_y": canon.shape[1], "shape_z": canon.shape[2],
        "orientation": volume.orientation,
        "n_slices": int(volume.shape[2]),
        "body_region": body_region(m.get("body_part", ""), z_extent, extra.pop("description", "")),
        "manufacturer": m.get("manufacturer", "") or "",
        "kvp": float(m["kvp"]) if m.get("kvp") is not None else math.nan,
        "source_format": m.get("source_format", "dicom"),
        "hu_min": hu.hu_min, "hu_max": hu.hu_max,
        "fingerprint": fingerprint,
        "slice_thickness": float(m["slice_thickness"]) if m.get("slice_thickness") else math.nan,
        "tilt_deg": float(m.get("tilt_deg", 0.0)),
        "corrections": list(m.get("corrections", [])),
        **extra,
    }  # fmt: skip
    write_json(
        {"status": "ok", "fingerprint": fingerprint, "row": row, "grid": canon.meta.get("grid")},
        config.volumes_dir / f"{study_id}.json",
    )
    log.info("study %s ingested: %s -> %s", study_id, volume.shape, canon.shape)
    return StudyOutcome(row, None, timings)


def _reject(
    config: IngestConfig, study_id: str, err: IngestError, fingerprint: str | None, source_format: str, timings: dict
) -> StudyOutcome:
    rej = {
        "study_id": study_id,
        "stage": err.stage,
        "reason": err.reason,
        "detail": err.detail,
        "source_format": source_format,
    }
    log.warning("study %s rejected at %s: %s (%s)", study_id, err.stage, err.reason, err.detail)
    if fingerprint:
        write_json(
            {"status": "rejected", "fingerprint": fingerprint, "rejection": rej},
            config.volumes_dir / f"{study_id}.json",
        )
        stale = config.volumes_dir / f"{study_id}.nii.gz"
        if stale.exists():
            stale.unlink()
    return StudyOutcome(None, rej, timings)


def _study_ids(study_key: str, series: dict[str, list[SliceHeader]]) -> dict:
    h = next(iter(series.values()))[0]
    study_id = pseudonym("study", study_key)
    patient = h.patient_id or next((s.patient_id for ss in series.values() for s in ss if s.patient_id), "")
    accession = h.accession or next((s.accession for ss in series.values() for s in ss if s.accession), "")
    return {
        "study_id": study_id,
        "patient_id": pseudonym("patient", patient)
        if patient
        else pseudonym("patient", f"unknown-patient-of:{study_key}"),
        "report_id": pseudonym("report", accession) if accession else "",
    }


def _one_patient(series: dict[str, list[SliceHeader]]) -> None:
    """Refuse a study whose files name more than one patient (one StudyInstanceUID reused across patients):
    which patient the images belong to cannot be told, and merging them would pair one patient's image
    with another's report."""
    by_patient: dict[str, dict[str, int]] = {}
    for uid, slices in series.items():
        for h in slices:
            if h.patient_id:
                files = by_patient.setdefault(pseudonym("patient", h.patient_id), {})
                files[pseudonym("series", uid)] = files.get(pseudonym("series", uid), 0) + 1
    if len(by_patient) > 1:
        parts = [
            f"{p}: " + ", ".join(f"series {s} ({n} files)" for s, n in sorted(files.items()))
            for p, files in sorted(by_patient.items())
        ]
        raise IngestError(
            "scan",
            "conflicting_patients",
            f"one StudyInstanceUID holds files of {len(by_patient)} patients ({'; '.join(parts)}); "
            "none is ingested, nothing is merged",
        )


def ingest_study(
    study_key: str, series: dict[str, list[SliceHeader]], config: IngestConfig, fingerprint: str | None = None
) -> StudyOutcome:
    """One DICOM study (``{series_uid: [slice headers]}``) -> canonical volume + row, or a rejection."""
    ids = _study_ids(study_key, series)
    timings: dict = {}
    try:
        _one_patient(series)
        choice = select_series(series, config.select)
        skipped = dict(choice.skipped)
        first_error: IngestError | None = None
        for cand in choice.candidates:
            try:
                geo = check_geometry(cand.slices, config.geometry)
            except IngestError as err:
                if cand.notes:  # what was dropped first can be why the rest fails (a repeated UID leaving a gap)
                    err = IngestError(err.stage, err.reason, f"{err.detail}; before that: {'; '.join(cand.notes)}")
                first_error = first_error or err
                skipped[pseudonym("series", cand.series_uid)] = f"{err.reason}: {err.detail}"
                continue
            for other in choice.candidates:
                if other is not cand and pseudonym("series", other.series_uid) not in skipped:
                    skipped[pseudonym("series", other.series_uid)] = (
                        f"ranked below the chosen series (coverage {other.coverage_mm:.0f} mm, "
                        f"thickness {other.thickness_mm:.2f} mm)"
                    )
            lt = LoadTimings()
            volume = load_series(cand.slices, geo, timings=lt)
            timings.update(read=lt.read, decode=lt.decode, rescale=lt.rescale)
            volume.meta["corrections"] = [*cand.notes, *volume.meta.get("corrections", [])]
            extra = {
                "series_id": pseudonym("series", cand.series_uid),
                "skipped_series": [f"{k}: {v}" for k, v in sorted(skipped.items())],
                "description": cand.slices[0].series_description,
            }
            return _finish(volume, config, ids, fingerprint or "", timings, extra)
        assert first_error is not None
        cut = [h for ss in series.values() for h in ss if h.truncated]
        if cut:  # a cut-off file that lost its series or position shows as a gap: name the cause
            raise IngestError(
                "scan",
                "truncated_file",
                f"{len(cut)} file(s) of the study end early (one {cut[0].truncated}); "
                f"then {first_error.reason}: {first_error.detail}",
            )
        raise first_error
    except IngestError as err:
        return _reject(config, ids["study_id"], err, fingerprint, "dicom", timings)
    except Exception as err:
        log.exception("study %s failed unexpectedly", ids["study_id"])
        return _reject(
            config,
            ids["study_id"],
            IngestError("internal", "unexpected_error", f"{type(err).__name__}: {str(err)[:200]}"),
            None,
            "dicom",
            timings,
        )


def nifti_ids(keys: dict) -> dict:
    """Pseudonymous study, patient and report ids of a manifest row (keys: patient_key, study_key, report_key)."""
    return {
        "study_id": pseudonym("study", str(keys["study_key"])),
        "patient_id": pseudonym("patient", str(keys["patient_key"]))
        if str(keys.get("patient_key") or "").strip()
        else pseudonym("patient", f"unknown-patient-of:{keys['study_key']}"),
        "report_id": pseudonym("report", str(keys["report_key"])) if str(keys.get("report_key") or "").strip() else "",
    }


def read_nifti(scan_path: str | os.PathLike, keys: dict) -> Volume:
    """A NIfTI scan as a 3-D volume (a trailing axis of one dropped), with a manifest row's corrections applied
    (``manifest_overrides``: ``keys`` may hold MANIFEST_OPTIONAL); ``IngestError`` at stage ``load`` when it is none."""
    try:
        vol = load_nifti(scan_path)
    except Exception as exc:  # noqa: BLE001
        raise IngestError("load", "unreadable_file", f"NIfTI cannot be read ({type(exc).__name__})") from None
    arr = vol.array
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise IngestError("load", "not_3d", f"NIfTI has shape {arr.shape}")
    if min(arr.shape) < 2:
        raise IngestError("load", "too_few_slices", f"NIfTI has shape {arr.shape}")
    arr, affine, corrections = manifest_overrides(arr, vol.affine, keys)
    return Volume(arr, affine, {"source_format": "nifti", "corrections": corrections})


def ingest_nifti_scan(
    scan_path: Path, keys: dict, config: IngestConfig, fingerprint: str | None = None
) -> StudyOutcome:
    """One NIfTI scan from a manifest row (keys: patient_key, study_key, report_key) -> row or rejection."""
    ids = nifti_ids(keys)
    study_id = ids["study_id"]
    timings: dict = {}
    try:
        t0 = perf_counter()
        volume = read_nifti(scan_path, keys)
        timings["read"] = perf_counter() - t0
        extra = {"series_id": "", "skipped_series": []}
        return _finish(volume, config, ids, fingerprint or "", timings, extra)
    except IngestError as err:
        return _reject(config, study_id, err, fingerprint, "nifti", timings)
    except Exception as err:
        log.exception("study %s failed unexpectedly", study_id)
        return _reject(
            config,
            study_id,
            IngestError("internal", "unexpected_error", f"{type(err).__name__}: {str(err)[:200]}"),
            None,
            "nifti",
            timings,
        )


def manifest_overrides(arr: np.ndarray, affine: np.ndarray, keys: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Apply a manifest row's optional rescale and affine (MANIFEST_OPTIONAL); say what was done."""
    get = lambda k: str(keys.get(k) or "").strip()  # noqa: E731
    corrections = []
    slope, intercept = float(get("rescale_slope") or 1.0), float(get("rescale_intercept") or 0.0)
    if (slope, intercept) != (1.0, 0.0):
        arr = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        corrections.append(f"rescale from manifest: slope {slope:g}, intercept {intercept:g}")
    if get("hu_rule"):
        corrections.append(f"hu rule: {get('hu_rule')}")
    if get("affine"):
        affine = np.asarray(json.loads(get("affine")), dtype=float)
        if affine.shape != (4, 4):
            raise IngestError("load", "bad_manifest_affine", f"manifest affine has shape {affine.shape}, expected 4x4")
        corrections.append("affine from manifest")
    if get("spacing_rule"):
        corrections.append(f"spacing rule: {get('spacing_rule')}")
    return arr, affine, corrections


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _mp_context():
    """forkserver: forking a process whose torch/OpenMP threads already ran can deadlock, and spawn
    re-imports torch in every worker; the fork server imports this module once and forks from there."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pipeline.ingest"])
    return ctx


def _run(task: tuple) -> StudyOutcome:
    kind, a, b, config, fp = task
    if kind == "dicom":
        return ingest_study(a, b, config, fp)
    return ingest_nifti_scan(a, b, config, fp)


def _folder_rejection(folder: str, root: Path, reason: str, detail: str) -> dict:
    rel = os.path.relpath(folder, root)
    return {
        "study_id": pseudonym("study", f"folder:{rel}"),
        "stage": "scan",
        "reason": reason,
        "detail": detail,
        "source_format": "dicom",
    }


def ingest_archive(
    config: IngestConfig, shard: str | None = None, progress: Callable[[int, int], None] | None = None
) -> IngestResult:
    """Scan the archive (and NIfTI manifest), ingest every study (of ``shard`` if given) in parallel.

    Returns ``ct_studies`` and ``rejected_studies``; canonical volumes go to ``<data>/volumes/``.
    """
    t_start = perf_counter()
    # one pool for the header scan and the studies (workers start once)
    pool = None
    if config.workers > 1:
        threads = max(1, (os.cpu_count() or 1) // config.workers)
        pool = ProcessPoolExecutor(
            max_workers=config.workers, mp_context=_mp_context(), initializer=_worker_init, initargs=(threads,)
        )
    try:
        return _ingest(config, shard, progress, pool, t_start)
    finally:
        if pool is not None:
            pool.shutdown()


def _ingest(
    config: IngestConfig,
    shard: str | None,
    progress: Callable[[int, int], None] | None,
    pool: ProcessPoolExecutor | None,
    t_start: float,
) -> IngestResult:
    """Every study the sources name, checked for conflicts before any is queued; the new or changed ones ingested."""
    pending, rejected, scan_s = _dicom_sources(config, pool, shard)
    manifest_pending, manifest_rejected = _manifest_sources(config, shard)
    pending += manifest_pending
    rejected += manifest_rejected
    plan = _plan(pending, config, shard)
    rejected += plan.rejected
    log.info(
        "ingest: %d studies to process, %d unchanged (%d rejections so far)",
        len(plan.tasks),
        plan.n_unchanged,
        len(rejected),
    )
    rows = list(plan.cached_rows)
    timings: dict = {"scan": scan_s}
    for out in _run_tasks(plan.tasks, pool, progress):
        if out.row is not None:
            rows.append(out.row)
        if out.rejection is not None:
            rejected.append(out.rejection)
        for k, v in out.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    ct, rej = _tables(rows, rejected, config.n_shards)
    timings["total"] = perf_counter() - t_start
    log.info("ingest done: %d studies, %d rejected, %.1f s", len(ct), len(rej), timings["total"])
    return IngestResult(ct, rej, plan.n_unchanged, timings)


def _in_shard(study_id: str, shard: str | None, n_shards: int) -> bool:
    """Whether a study belongs to the shard being ingested (every study when no shard is given)."""
    return shard is None or shard_of(study_id, n_shards) == shard


Pending = tuple[Claim, tuple]  # a study a source names: its claim, and the job that ingests it


def _dicom_sources(
    config: IngestConfig, pool: ProcessPoolExecutor | None, shard: str | None
) -> tuple[list[Pending], list[dict], float]:
    """The studies of the DICOM archive, the rejections of its unreadable and empty folders (of ``shard``), and the
    seconds the header scan took."""
    t0 = perf_counter()
    pending: list[Pending] = []
    rejected: list[dict] = []
    root = config.dicom_dir
    if not root.is_dir():
        if config.nifti_manifest is None:
            log.warning("no DICOM archive at the configured root and no NIfTI manifest")
        return pending, rejected, 0.0
    scan = scan_dicom(root, chunk=64, executor=pool)
    scan_s = perf_counter() - t0
    for study_key, series in group_studies(scan.headers).items():
        ids = _study_ids(study_key, series)
        files = [(os.path.relpath(h.path, root), h.size, h.mtime_ns) for ss in series.values() for h in ss]
        pending.append(
            (
                Claim(
                    ids["study_id"],
                    ids["patient_id"],
                    ids["report_id"],
                    f"the DICOM archive (study {ids['study_id']})",
                    "dicom",
                ),
                ("dicom", study_key, series, files),
            )
        )
    bad_by_dir: dict[str, int] = {}
    for p in scan.unreadable:
        bad_by_dir[os.path.dirname(p)] = bad_by_dir.get(os.path.dirname(p), 0) + 1
    for folder, n in sorted(bad_by_dir.items()):
        rej = _folder_rejection(
            folder, root, "unreadable_files", f"{n} file(s) could not be parsed as DICOM (truncated or corrupt)"
        )
        if _in_shard(rej["study_id"], shard, config.n_shards):
            rejected.append(rej)
    for folder in scan.empty_dirs:
        rej = _folder_rejection(folder, root, "empty_folder", "a folder without any DICOM file")
        if _in_shard(rej["study_id"], shard, config.n_shards):
            rejected.append(rej)
    return pending, rejected, scan_s


def _manifest_sources(config: IngestConfig, shard: str | None) -> tuple[list[Pending], list[dict]]:
    """The studies of the NIfTI manifest, and the rejections of its rows without a study key (of ``shard``)."""
    pending: list[Pending] = []
    rejected: list[dict] = []
    if config.nifti_manifest is None:
        return pending, rejected
    manifest = Path(config.nifti_manifest)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = {"scan_path", "patient_key", "study_key", "report_key"} - set(table.columns)
    if missing:
        raise ValueError(f"NIfTI manifest lacks columns {sorted(missing)}")
    for line, rec in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        where = f"{manifest.name} line {line}"
        if not rec["study_key"].strip():
            rej = {
                "study_id": pseudonym("study", f"manifest:{manifest.name}:{line}"),
                "stage": "scan",
                "reason": "missing_study_key",
                "detail": f"{where} has no study_key",
                "source_format": "nifti",
            }
            if _in_shard(rej["study_id"], shard, config.n_shards):
                rejected.append(rej)
            continue
        path = (manifest.parent / rec["scan_path"]).resolve()
        keys = {k: rec[k] for k in ("patient_key", "study_key", "report_key", *MANIFEST_OPTIONAL) if k in rec}
        ids = nifti_ids(keys)
        pending.append(
            (
                Claim(ids["study_id"], ids["patient_id"], ids["report_id"], where, "nifti", str(path)),
                ("nifti", path, keys, rec["scan_path"]),
            )
        )
    return pending, rejected


@dataclass
class _Plan:
    """What to do with the studies of ``shard``: the tasks to run, the rows and rejections kept from earlier runs
    (inputs unchanged), and the rejections found before ingest (refused claims, missing scan files)."""

    tasks: list[tuple] = field(default_factory=list)
    cached_rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    n_unchanged: int = 0


def _plan(pending: list[Pending], config: IngestConfig, shard: str | None) -> _Plan:
    """Refuse the conflicting claims (one row per refused study, naming every claimant); of the rest, reuse what an
    earlier run made of unchanged inputs and queue the others."""
    plan = _Plan()
    refused = conflicts([claim for claim, _ in pending])
    said: set[tuple[str, str]] = set()
    for i, (claim, job) in enumerate(pending):
        if not _in_shard(claim.study_id, shard, config.n_shards):
            continue
        if i in refused:
            if (claim.study_id, refused[i]["reason"]) not in said:
                said.add((claim.study_id, refused[i]["reason"]))
                plan.rejected.append(refused[i])
                log.warning("study %s refused: %s (%s)", claim.study_id, refused[i]["reason"], refused[i]["detail"])
            continue
        kind, a, b, files = job
        if kind == "nifti":
            overrides = json.dumps({k: b[k] for k in MANIFEST_OPTIONAL if k in b}, sort_keys=True)
            try:
                st = a.stat()
            except OSError:
                plan.rejected.append(
                    {
                        "study_id": claim.study_id,
                        "stage": "load",
                        "reason": "missing_file",
                        "detail": "the manifest's scan file does not exist",
                        "source_format": "nifti",
                    }
                )
                continue
            files = [(files + (f"\0{overrides}" if overrides != "{}" else ""), st.st_size, st.st_mtime_ns)]
        fp = _fingerprint(files, config)
        rec = _cached(config, claim.study_id, fp)
        if rec is None:
            plan.tasks.append((kind, a, b, config, fp))
            continue
        plan.n_unchanged += 1
        if rec["status"] == "ok":  # rows cached before paths were stored relative to the data root get theirs
            volume = config.volumes_dir / f"{claim.study_id}.nii.gz"
            plan.cached_rows.append({**rec["row"], "volume_path": stored_path(volume, config.data_root)})
        else:
            plan.rejected.append(rec["rejection"])
    return plan


def _run_tasks(
    tasks: list[tuple], pool: ProcessPoolExecutor | None, progress: Callable[[int, int], None] | None
) -> list[StudyOutcome]:
    """Every task's outcome, in the order they finish (in the pool where there is one and more than one task)."""
    if pool is None or len(tasks) <= 1:
        outcomes = (_run(task) for task in tasks)
    else:
        outcomes = (fut.result() for fut in as_completed([pool.submit(_run, t) for t in tasks]))
    done: list[StudyOutcome] = []
    for out in outcomes:
        done.append(out)
        if progress is not None:
            progress(len(done), len(tasks))
    return done


def _tables(rows: list[dict], rejected: list[dict], n_shards: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``ct_studies`` and ``rejected_studies``, each row with its shard, sorted by study."""
    for r in rows:
        r["shard"] = shard_of(r["study_id"], n_shards)
    for r in rejected:
        r["shard"] = shard_of(r["study_id"], n_shards)
    ct = pd.DataFrame(rows, columns=CT_STUDIES_COLUMNS).sort_values("study_id", ignore_index=True)
    rej = pd.DataFrame(rejected, columns=REJECTED_COLUMNS).sort_values(["study_id", "stage"], ignore_index=True)
    return ct, rej
