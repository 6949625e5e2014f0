"""Evaluation of CT-GLIP and its baselines: metrics, zero-shot organ recognition (OR) and
abnormality detection (AD), tumor detection (TD), tumor segmentation (TS), and the report.

Pure functions on arrays and on any model offering the CT-GLIP interface (docs/ARCHITECTURE.md);
no dagster imports.
"""

from model.eval.data import EvalData, load_eval_data
from model.eval.evaluate import EvalConfig, EvalResult, MethodResult, evaluate
from model.eval.metrics import Estimate, bootstrap_ci
from model.eval.report import Report, build_report

__all__ = [
    "EvalConfig",
    "EvalData",
    "EvalResult",
    "Estimate",
    "MethodResult",
    "Report",
    "bootstrap_ci",
    "build_report",
    "evaluate",
    "load_eval_data",
]
