"""CLI: ``python -m pipeline.synthetic --out DIR --n 24 --seed 0 [--preset benchmark] [--reserved-phrasing]
[--no-faults]``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.synthetic.cohort import FAULTS, PRESETS, CohortSpec, cohort_spec, generate_cohort


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.synthetic",
        description="Write a synthetic CT cohort (DICOM archive, RIS reports.csv, masks manifest, ground truth).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (dicom/, reports.csv, masks/, truth/)")
    parser.add_argument("--n", type=int, default=CohortSpec.n_studies, help="number of regular studies (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical cohort")
    parser.add_argument(
        "--reserved-phrasing",
        action="store_true",
        help="write reports with the held-out (evaluation-only) paraphrase bank",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="demo",
        help="'benchmark': the cohort that needs learning (varied appearance, organ sizes and lesions, "
        "imperfect reports, reserved phrasing on validation and test)",
    )
    parser.add_argument(
        "--appearance",
        choices=("uniform", "varied"),
        default=None,
        help="override the preset's: 'varied' = per-study contrast phase, per-patient organ HU, texture, "
        "slice blur and noise",
    )
    parser.add_argument("--no-faults", action="store_true", help=f"omit the faulty inputs ({', '.join(FAULTS)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    spec = cohort_spec(
        args.preset,
        n_studies=args.n,
        seed=args.seed,
        reserved_phrasing=args.reserved_phrasing,
        faults=not args.no_faults,
        **({"appearance": args.appearance} if args.appearance else {}),
    )
    start = time.perf_counter()
    manifest = generate_cohort(spec, args.out)
    logging.info(
        "wrote %d studies (+%d faulty inputs) to %s in %.1f s",
        manifest.n_studies,
        len(manifest.faults),
        args.out,
        time.perf_counter() - start,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
