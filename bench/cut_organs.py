"""Cut organs: how much of an organ cut by the field of view is inside the scan, against the measure the
pair rule uses (organ_stats' ``cut_face_ratio``), and how many pairs each cut-organ rule keeps.

Baseline: the ``exclude`` rule, counted in the same run; every other rule is printed as a ratio of its pairs.

Truth needs whole organs, so cuts are made where the uncut organ is known:
- synthetic: the generator's anatomy painted over the whole body at 3 mm, then cropped to the z windows of the
  cohort's fields of view (chest, abdomen-pelvis, chest-abdomen-pelvis, with the generator's jitter);
- real: the TotalSegmentator segmentations in ../shared/realdata/totalsegmentator (``--realdata``): the organs
  that touch no face there are whole; the label map is cropped at every slice, from the top and from the bottom.
An organ's inside fraction is its voxels in the crop over its voxels uncropped.

Pair counts: with ``--data-root`` (data roots materialized up to pair_exclusions, e.g. by
``python -m launch.run_all --until pairs``), mine_pairs on its tables under each rule; and, for the real
segmentations as they are, the organs each rule pairs (one study, a report that mentions nothing).

    python bench/cut_organs.py --patients 12 --data-root data /tmp/other_root

Writes bench/results/cut_organs.json: the calibration table and the pair counts with their ratios to ``exclude``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import write_record  # noqa: E402

from pipeline.pairs import PairConfig, PairInputs, mine_pairs  # noqa: E402
from pipeline.segment import organ_stats  # noqa: E402
from pipeline.volume import Volume, load_nifti  # noqa: E402

THRESHOLDS = (0.25, 0.5, 0.75, 0.9)
RULES = (("exclude", PairConfig(cut_organs="exclude")), ("keep_flagged", PairConfig(cut_organs="keep_flagged"))) + tuple(
    (f"keep_if_inside:{t:g}", PairConfig(cut_organs="keep_if_inside", max_cut_face_ratio=t)) for t in THRESHOLDS
)


def _cut_rows(source: str, whole: pd.DataFrame, crop: Volume, case: str) -> list[dict]:
    """Cut organs of ``crop`` that are whole in ``whole`` (organ_stats of the uncropped map), with truth."""
    stats = organ_stats(case, crop, None)
    full = whole[~whole["cut_by_fov"]].set_index("organ")["voxels"]
    cut = stats[stats["cut_by_fov"] & stats["organ"].isin(full.index)]
    return [{"source": source, "case": case, "organ": r.organ, "ratio": r.cut_face_ratio,
             "inside": r.voxels / full[r.organ]} for r in cut.itertuples()]


def _z_crops(labels: Volume, step: int = 1):
    """(name, cropped label map) at every ``step`` slices from each end along k (the axial stack)."""
    n = labels.shape[2]
    for k in range(1, n - 1, step):
        top = np.asarray(labels.array)[:, :, k:]
        shift = np.eye(4)
        shift[2, 3] = k
        yield f"from{k}", Volume(top, labels.affine @ shift)
        yield f"to{n - k}", Volume(np.asarray(labels.array)[:, :, : n - k], labels.affine)


def synthetic_rows(n_patients: int, seed: int) -> list[dict]:
    from pipeline.synthetic.anatomy import Patient, body_half_axes, build_anatomy, paint
    from pipeline.synthetic.cohort import _FOV_Z, CohortSpec
    from pipeline.synthetic.shapes import Grid

    spec = CohortSpec()
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for p in range(n_patients):
        patient = Patient(scale=float(rng.uniform(*spec.body_scale)), fat_mm=float(rng.uniform(8, 24)),
                          width=float(rng.uniform(0.92, 1.08)), seed=int(rng.integers(2**31)))
        s = patient.scale
        zs = np.arange(340 * s, -600 * s, -3.0)
        ax, ay = body_half_axes(zs, patient)
        half = max(float(ax.max()), float(ay.max())) + 10
        xs = np.arange(half, -half, -3.0)
        labels, _ = paint(build_anatomy(patient), Grid(xs, xs.copy(), zs), patient)
        affine = np.diag([-3.0, -3.0, -3.0, 1.0])
        affine[:3, 3] = xs[0], xs[0], zs[0]
        whole = organ_stats("whole", Volume(labels, affine), None)
        for fov, (top, bottom) in _FOV_Z.items():
            for j in range(3):
                t, b = top * s + rng.normal(0, 12), bottom * s + rng.normal(0, 12)
                k = np.nonzero((zs <= t) & (zs >= b))[0]
                shift = np.eye(4)
                shift[2, 3] = k[0]
                crop = Volume(labels[:, :, k[0]: k[-1] + 1], affine @ shift)
                rows += _cut_rows("synthetic", whole, crop, f"patient{p}-{fov}-{j}")
    return rows


def real_rows(realdata: Path) -> list[dict]:
    rows: list[dict] = []
    for name in ("example_seg.nii.gz", "example_seg_dicom.nii.gz"):
        labels = load_nifti(realdata / "totalsegmentator" / name)
        labels = Volume(np.asarray(labels.array).astype(np.uint8), labels.affine)
        whole = organ_stats(name, labels, None)
        for case, crop in _z_crops(labels):
            rows += _cut_rows(f"real:{name}", whole, crop, case)
    return rows


def calibration_table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for source, g in rows.groupby("source"):
        for t in (*THRESHOLDS, 1.0):
            kept = g[g["ratio"] <= t]
            out.append({
                "source": source, "max_cut_face_ratio": t, "cut_organs": len(g), "kept": len(kept),
                "kept_share": len(kept) / max(len(g), 1),
                "inside_median": kept["inside"].median() if len(kept) else np.nan,
                "inside_p10": kept["inside"].quantile(0.1) if len(kept) else np.nan,
                "kept_under_half_inside": int((kept["inside"] < 0.5).sum()),
                "dropped_over_90pct_inside": int(((g["ratio"] > t) & (g["inside"] >= 0.9)).sum()),
            })
    return pd.DataFrame(out)


def _counts(inputs: PairInputs) -> dict[str, int]:
    return {name: len(mine_pairs(inputs, config).grounded_pairs) for name, config in RULES}


def real_pair_counts(realdata: Path) -> pd.DataFrame:
    out = []
    for name in ("example_seg.nii.gz", "example_seg_dicom.nii.gz"):
        labels = load_nifti(realdata / "totalsegmentator" / name)
        stats = organ_stats("stu-real", Volume(np.asarray(labels.array).astype(np.uint8), labels.affine), None)
        studies = pd.DataFrame({"study_id": ["stu-real"], "patient_id": ["pat-real"], "report_id": ["rep-real"], "volume_path": [""]})
        findings = pd.DataFrame(columns=["report_id", "organ", "status", "abnormality", "sentence", "section"])
        out.append({"data": f"real {name}", "organs": len(stats), "cut": int(stats["cut_by_fov"].sum()),
                    **_counts(PairInputs(studies, stats, findings, frozenset({"rep-real"})))})
    return pd.DataFrame(out)


def cohort_pair_counts(root: Path) -> pd.DataFrame:
    from assets.pairs import load_pair_inputs

    inputs = load_pair_inputs(root)
    return pd.DataFrame([{"data": f"tables under {root}", "organs": len(inputs.organ_stats),
                          "cut": int(inputs.organ_stats["cut_by_fov"].sum()), **_counts(inputs)}])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=12, help="synthetic patients painted whole (each cropped 9 times); 0: none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--realdata", type=Path, default=Path(os.environ.get("CTGLIP_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata")))
    parser.add_argument("--data-root", type=Path, nargs="*", default=[], help="materialized data roots: pair counts of their tables under each rule")
    parser.add_argument("--out", type=Path, default=None, help="the record (default bench/results/cut_organs.json)")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)

    t0 = time.perf_counter()
    rows = synthetic_rows(args.patients, args.seed)
    have_real = (args.realdata / "totalsegmentator").is_dir()
    if have_real:
        rows += real_rows(args.realdata)
    else:
        print(f"real segmentations not found under {args.realdata}; synthetic only")
    table = calibration_table(pd.DataFrame(rows))
    print(f"Cut organs whose whole volume is known ({time.perf_counter() - t0:.0f} s): kept by keep_if_inside at each "
          "max_cut_face_ratio (1.0 = keep_flagged), and the fraction of their volume inside the scan")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    counts = [real_pair_counts(args.realdata)] if have_real else []
    counts += [cohort_pair_counts(root) for root in args.data_root]
    pair_counts = []
    if counts:
        df = pd.concat(counts, ignore_index=True)
        print("\nPairs under each rule (baseline: exclude, same run):")
        print(df.to_string(index=False))
        for r in df.to_dict("records"):
            ratios = {name: round(r[name] / r["exclude"], 3) for name, _ in RULES[1:]} if r["exclude"] else None
            pair_counts.append({k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in r.items()} | {"ratio_to_exclude": ratios})
            if not ratios:
                print(f"  {r['data']}: exclude pairs nothing; no ratio")
                continue
            print(f"  {r['data']}: " + ", ".join(f"{name} x{v:.2f}" for name, v in ratios.items()) + f" vs exclude ({r['exclude']} pairs)")
    calibration = [{k: (None if isinstance(v, float) and np.isnan(v) else (round(v, 4) if isinstance(v, float) else
                                                                          (int(v) if isinstance(v, np.integer) else v)))
                    for k, v in row.items()} for row in table.to_dict("records")]
    write_record("cut_organs", {"calibration": calibration, "baseline": "exclude (pairs in the same run)", "pair_counts": pair_counts},
                 script=__file__, argv=argv, out=args.out,
                 inputs={"synthetic_patients": args.patients, "seed": args.seed,
                         "realdata": os.path.relpath(args.realdata / "totalsegmentator", Path(__file__).resolve().parents[1]) if have_real else None,
                         "data_roots": [str(r) for r in args.data_root]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
