"""Zero-shot OR and AD on synthetic embeddings whose answer is known."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from model import prompts
from model.eval.results import MethodResult
from model.eval.zero_shot import abnormality_detection, ad_labels, organ_recognition, select_ad_tasks


def macro(res, metric: str, n_boot: int = 20):
    """The macro metric of an AD result as every report reads it (model.eval.results)."""
    return MethodResult("m", True, abnormality_detection=res).metrics(n_boot)[metric]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_organ_recognition_aligned_is_perfect():
    rng = np.random.default_rng(0)
    classes = ["liver", "spleen", "kidney_left", "pancreas"]
    class_emb = _unit(rng.normal(size=(4, 32)))
    truth = rng.integers(0, 4, 40)
    organ_emb = class_emb[truth] + 0.05 * rng.normal(size=(40, 32))
    res = organ_recognition(organ_emb, [classes[t] for t in truth], class_emb, classes, n_boot=50)
    assert res.accuracy.value == 1.0 and res.macro_f1.value == 1.0
    assert np.trace(res.confusion) == 40 and res.confusion.sum() == 40
    assert res.per_class_accuracy == {c: 1.0 for c in classes}
    assert res.confusion_png().startswith(b"\x89PNG")


def test_organ_recognition_random_is_near_chance():
    rng = np.random.default_rng(1)
    classes = [f"organ_{i}" for i in range(5)]
    truth = rng.integers(0, 5, 2000)
    res = organ_recognition(rng.normal(size=(2000, 16)), [classes[t] for t in truth], rng.normal(size=(5, 16)), classes,
                            n_boot=20)
    assert abs(res.accuracy.value - 0.2) < 0.05
    assert res.accuracy.low <= res.accuracy.value <= res.accuracy.high


def test_organ_recognition_rejects_unknown_organ():
    with pytest.raises(ValueError):
        organ_recognition(np.ones((1, 2)), ["heart"], np.ones((1, 2)), ["liver"], n_boot=1)


def _rows(n: int, organ: str, abn: str, pos: np.ndarray, split: str) -> pd.DataFrame:
    return pd.DataFrame({
        "study_id": [f"{split}-{i}" for i in range(n)], "patient_id": [f"p-{split}-{i}" for i in range(n)],
        "organ": organ, "status": ["abnormal" if p else "normal" for p in pos],
        "abnormalities": [[abn] if p else [] for p in pos],
    })


def test_abnormality_detection_aligned_embeddings():
    rng = np.random.default_rng(2)
    normal, abnormal = _unit(rng.normal(size=(2, 16)))
    def emb(y): return _unit(np.where(y[:, None] == 1, abnormal, normal) + 0.05 * rng.normal(size=(len(y), 16)))
    y_te, y_va = rng.integers(0, 2, 60), rng.integers(0, 2, 40)
    te, va = _rows(60, "liver", "mass", y_te, "te"), _rows(40, "liver", "mass", y_va, "va")
    res = abnormality_detection(emb(y_te), te, emb(y_va), va, {("liver", "mass"): (normal, abnormal)},
                                [("liver", "mass")], n_boot=50)
    (pair,) = res.pairs
    assert pair.n_pos == y_te.sum() and pair.n_neg == 60 - y_te.sum()
    assert pair.auc.value == 1.0 and pair.f1.value == 1.0
    assert macro(res, "ad_auc").value == 1.0 and macro(res, "ad_f1").value == 1.0
    scores, labels = res.pooled()
    assert len(scores) == 60 and labels.tolist() == y_te.tolist()


def _scored(d: np.ndarray) -> np.ndarray:
    """Unit 2-d embeddings whose AD score against prompts normal=(1, 0), abnormal=(0, 1) is ``d``."""
    theta = np.pi / 4 + np.arcsin(np.asarray(d) / np.sqrt(2))
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def test_ad_f1_with_one_pooled_threshold():
    # validation: liver +0.2 / -0.5, spleen +0.6 / +0.4. Own thresholds: 0.2 and 0.6. Pooled: F1 at
    # 0.6 = 2/3, at 0.4 = 1/2, at 0.2 = 4/5, at -0.5 = 2/3 -> one threshold 0.2.
    # test: liver +0.3 / -0.3, spleen +0.5 / +0.1: own thresholds F1 1 and 0 (0.5 < 0.6), pooled 1 and 1.
    def rows(split, organs, pos):
        return pd.concat([_rows(2, o, a, np.array(p), f"{split}-{o}") for o, a, p in zip(organs, ["mass", "splenomegaly"], pos)],
                         ignore_index=True)
    organs = ["liver", "spleen"]
    prompts_ = {("liver", "mass"): (np.array([1.0, 0]), np.array([0, 1.0])),
                ("spleen", "splenomegaly"): (np.array([1.0, 0]), np.array([0, 1.0]))}
    res = abnormality_detection(_scored([0.3, -0.3, 0.5, 0.1]), rows("te", organs, [[1, 0], [1, 0]]),
                                _scored([0.2, -0.5, 0.6, 0.4]), rows("va", organs, [[1, 0], [1, 0]]),
                                prompts_, [("liver", "mass"), ("spleen", "splenomegaly")], n_boot=10)
    assert [p.threshold for p in res.pairs] == pytest.approx([0.2, 0.6])
    assert [p.f1.value for p in res.pairs] == [1.0, 0.0]
    assert macro(res, "ad_f1").value == pytest.approx(0.5)
    assert res.pooled_threshold == pytest.approx(0.2)
    assert macro(res, "ad_f1_pooled_threshold").value == pytest.approx(1.0)
    assert macro(res, "ad_f1_all_positive").value == pytest.approx(2 / 3)  # 1 of 2 positive in each pair: 2 * 0.5 / 1.5
    # liver mass is a focal task, splenomegaly a size task: each group's AUC is its own pair's
    assert macro(res, "ad_auc_focal").value == res.pairs[0].auc.value
    assert macro(res, "ad_auc_size").value == res.pairs[1].auc.value
    assert not macro(res, "ad_auc_diffuse").applicable


def test_abnormality_detection_random_is_near_chance():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    te = _rows(400, "liver", "mass", y, "te")
    va = _rows(400, "liver", "mass", rng.integers(0, 2, 400), "va")
    p = rng.normal(size=(2, 8))
    res = abnormality_detection(rng.normal(size=(400, 8)), te, rng.normal(size=(400, 8)), va,
                                {("liver", "mass"): (p[0], p[1])}, [("liver", "mass")], n_boot=20)
    assert abs(macro(res, "ad_auc").value - 0.5) < 0.08


def test_ad_labels_and_task_selection():
    rows = pd.DataFrame({
        "organ": ["liver", "liver", "liver", "liver", "spleen", "spleen", "kidney_left"],
        "status": ["abnormal", "normal", "abnormal", "uncertain", "abnormal", "normal", "abnormal"],
        "abnormalities": [["mass"], [], ["cyst", "mass"], [], ["splenomegaly"], [], ["stone"]],
    })
    take, y = ad_labels(rows, "liver", "mass")
    assert take.tolist() == [0, 1, 2] and y.tolist() == [1, 0, 1]
    take, y = ad_labels(rows, "liver", "cyst", negatives="other")
    assert take.tolist() == [0, 1, 2] and y.tolist() == [0, 0, 1]
    # kidney stone has no negative -> unscorable; liver mass (2) outranks the rest (1), ties by name
    assert select_ad_tasks(rows, k=2) == [("liver", "mass"), ("liver", "cyst")]
    assert select_ad_tasks(rows, k=10) == [("liver", "mass"), ("liver", "cyst"), ("spleen", "splenomegaly")]


def test_prompts_are_readable_and_several():
    assert prompts.readable_organ("kidney_left") == "left kidney"
    ps = prompts.organ_prompts("kidney_left")
    assert "the left kidney" in ps and len(ps) >= 2
    normal, abnormal = prompts.abnormality_prompts("liver", "mass")
    assert "Mass is not present in the liver." in normal and "Mass is present in the liver." in abnormal  # CT-CLIP's form
    assert len(normal) >= 3 and len(abnormal) >= 3 and not set(normal) & set(abnormal)


def _sentences(text: str) -> set[str]:
    return {t.strip().lower().rstrip(".") for t in re.split(r"(?<=[.;:])\s+", text) if t.strip()}


def test_zero_shot_prompts_share_no_text_or_template_with_training(tmp_path):
    """The zero-shot scores test whether the text side learned what negation means, not whether it recalls a string:
    no evaluation prompt is a training text (organ texts, reports, names, the dictionary's affirmed and negated phrases
    in every phrasing), and no evaluation template is a training form or a report phrase."""
    from model.data import AFFIRMED, NEGATED, UNREMARKABLE, Dictionary, affirmed_text, name_text, named_text, negated_text, normal_text, read_split
    from model.fake_data import make_fake_data_root
    from pipeline.synthetic.phrases import DEFAULT, RESERVED

    root = make_fake_data_root(tmp_path, n_studies=10, shape=(32, 32, 24), p_abnormal=0.6)
    training: set[str] = set()
    tasks: set[tuple[str, str]] = set()
    for organ_text in ("named", "report"):
        studies, items, _ = read_split(root, "train", organ_text=organ_text)
        dictionary = Dictionary.of(items)
        texts = [it.text for it in items] + [s.text for s in studies] + [name_text(it.organ) for it in items]
        texts += [normal_text(it.organ) for it in items]
        for it in items:
            n = len(dictionary.abnormalities.get(it.organ, ()))
            for form in range(len(AFFIRMED)):
                texts += [t for row in dictionary.rows(it, [form] * n) for t in row[:2]]
        tasks |= {(o, a) for o, abns in dictionary.abnormalities.items() for a in abns}
        training |= {t.strip().lower().rstrip(".") for t in texts} | {x for t in texts for x in _sentences(t)}
    assert tasks and len(training) > 50
    # the dictionary's phrases, every phrasing, affirmed and negated, are among the training texts checked
    assert {f(a, o, k).lower() for o, a in tasks for k in range(len(AFFIRMED)) for f in (affirmed_text, negated_text)} <= training
    rendered = {p.lower().rstrip(".") for o, a in tasks for p in sum(prompts.abnormality_prompts(o, a), [])}
    rendered |= {p.lower() for o, _ in tasks for p in prompts.organ_prompts(o)}
    assert not rendered & training
    # the templates themselves: neither the training forms (model.data) nor a report phrase (either bank)
    forms = {*AFFIRMED, *NEGATED, UNREMARKABLE, normal_text("{organ}"), named_text("{organ}", "{text}"), name_text("{organ}"),
             affirmed_text("{abn}", "{organ}"), negated_text("{abn}", "{organ}")}
    forms |= {p for bank in (DEFAULT, RESERVED) for ps in bank.values() for p in ps}
    templates = prompts.ORGAN_TEMPLATES + prompts.NORMAL_TEMPLATES + prompts.ABNORMAL_TEMPLATES
    assert not {t.lower().rstrip(".") for t in templates} & {f.lower().rstrip(".") for f in forms}


def test_counted_structures_are_ribs_and_vertebrae_only():
    from pipeline.vocab import counted

    assert counted("rib_left_5") and counted("vertebrae_L2") and counted("vertebrae_C1")
    assert not any(counted(n) for n in ("sacrum", "liver", "lung_upper_lobe_left", "sternum", "costal_cartilages"))
