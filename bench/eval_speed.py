"""Bootstrap intervals: the one-pass resampled metrics against scikit-learn called once per resample.

Baseline: ``bootstrap_ci`` with the plain metric function (scikit-learn on each resample's drawn cases),
timed in the same run on the same arrays and resamples; the ratio is baseline time / one-pass time, and
the intervals of the two must agree. The cases are shaped like one method's evaluation at CT-GLIP's
scale: 16 abnormality-detection tasks of 60 organs each, macro AUC and macro F1 over them, and tumor
detection over 400 studies, patients holding several cases.

    python bench/eval_speed.py --n-bootstrap 1000     # writes bench/results/eval_speed.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import write_record  # noqa: E402

from model.eval import metrics as M  # noqa: E402


def cases(seed: int = 0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    n_task, per_task = 16, 60
    task = np.repeat(np.arange(n_task), per_task)
    y = rng.integers(0, 2, len(task))
    s = y * 0.8 + rng.normal(0, 1, len(task))
    patients = rng.integers(0, len(task) // 3, len(task))
    td_y = rng.integers(0, 2, 400)
    td_s = td_y + rng.normal(0, 1, 400)
    return {
        "AD macro AUC (16 tasks)": (M.macro_over_tasks(M.ROC_AUC), (task, s, y), patients),
        "AD macro F1 (16 tasks)": (M.macro_over_tasks(M.F1), (task, y, (s > 0.4).astype(int)), patients),
        "TD AUC (400 studies)": (M.ROC_AUC, (td_s, td_y), np.arange(400) // 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-bootstrap", type=int, default=1000, help="resamples per interval (the evaluation's default)")
    ap.add_argument("--out", type=Path, default=None, help="the record (default bench/results/eval_speed.json)")
    args = ap.parse_args(argv)
    print(f"{'metric':<26} {'scikit-learn loop s':>20} {'one pass s':>11} {'ratio':>7}  intervals agree")
    rows = {}
    for name, (metric, arrays, groups) in cases().items():
        t0 = time.perf_counter()
        slow = M.bootstrap_ci(metric.fn, *arrays, n=args.n_bootstrap, seed=0, groups=groups)
        t1 = time.perf_counter()
        fast = M.bootstrap_ci(metric, *arrays, n=args.n_bootstrap, seed=0, groups=groups)
        t2 = time.perf_counter()
        agree = bool(np.allclose(slow, fast, rtol=1e-9, atol=1e-12))
        rows[name] = {"baseline_sklearn_loop_s": round(t1 - t0, 3), "one_pass_s": round(t2 - t1, 4),
                      "ratio": round((t1 - t0) / (t2 - t1), 1), "intervals_agree": agree,
                      "interval_one_pass": [round(float(x), 4) for x in fast]}
        print(f"{name:<26} {t1 - t0:>20.2f} {t2 - t1:>11.3f} {(t1 - t0) / (t2 - t1):>7.0f}  {agree}")
        if not agree:
            print(f"  differ: loop {slow}, one pass {fast}", file=sys.stderr)
    write_record("eval_speed", {"baseline": "bootstrap_ci with the plain metric (scikit-learn on each resample)",
                                "ratio": "baseline seconds / one-pass seconds", "metrics": rows},
                 script=__file__, argv=argv, inputs={"cases": "cases(seed=0)", "n_bootstrap": args.n_bootstrap}, out=args.out)
    return 0 if all(r["intervals_agree"] for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
