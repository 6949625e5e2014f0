"""Pictures as PNG bytes (matplotlib, Agg backend; no global state left behind)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(cm: np.ndarray, classes: Sequence[str], title: str = "") -> bytes:
    """Row-normalised confusion matrix (rows: true organ, columns: predicted)."""
    n = len(classes)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    size = max(
        4.0, 0.2 * n + 2
    )  # 0.2 in a row: room for 7-point names, and 72 organs stay a picture the UI shows whole
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def roc_png(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray, float]]]) -> bytes:
    """One panel per task; ``curves[task][method] = (fpr, tpr, auc)``."""
    tasks = list(curves) or ["(none)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method, (fpr, tpr, auc) in curves.get(task, {}).items():
            ax.plot(fpr, tpr, label=f"{method} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=task, xlim=(0, 1), ylim=(0, 1.01))
        if curves.get(task):  # an empty panel ("(none)") has nothing to label
            ax.legend(loc="lower right", fontsize=7)
    return _png(fig)


def grouped_bars_png(values: Mapping[str, Mapping[str, float]], ylabel: str, title: str = "") -> bytes:
    """``values[method][category]``: one group of bars per category (e.g. organ), one bar per method."""
    methods = list(values)
    cats = sorted({c for v in values.values() for c in v})
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(cats) * max(len(methods), 1) + 2), 4))
    x = np.arange(len(cats))
    for i, m in enumerate(methods):
        ax.bar(x + i * width, [values[m].get(c, np.nan) for c in cats], width, label=m)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, cats, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 1.05))
    if methods:
        ax.legend(fontsize=7)
    return _png(fig)
