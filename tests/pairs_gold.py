"""Score mined pairs against the synthetic cohort's ground truth (``source/truth/organ_gold.parquet``): a test
helper (tests/test_pairs_gold.py), kept out of the package since nothing else scores pairs.

    from pairs_gold import score_pairs
    score = score_pairs(grounded_pairs, pair_exclusions, gold, studies_truth)
    score.status_agreement, score.abnormal_recall, score.patients_in_two_splits, score.disagreements

The gold names studies by ``study_uid`` and reports by ``accession``; the tables use pseudonyms, so the
gold is keyed with ``pipeline.ids.pseudonym("study", study_uid)`` (same key as the run that made the tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline.ids import pseudonym

DISAGREEMENT_COLUMNS = [
    "kind", "study_id", "organ", "pair_status", "text_source", "gold_report_status", "gold_image_status",
    "pair_abnormalities", "gold_abnormalities", "exclusion_reason", "text",
]


@dataclass(frozen=True)
class PairScore:
    n_pairs: int
    """Rows of grounded_pairs."""
    n_scored: int
    """Pairs whose (study, organ) has a gold row (the denominator of status_agreement)."""
    status_agreement: float
    """Share of scored pairs whose status equals the gold report status (gold not_mentioned == template normal)."""
    n_abnormal_gold: int
    """Gold organs abnormal in the image and reported abnormal, in the image and not excluded."""
    abnormal_recall: float
    """Share of those that yield a pair of status abnormal."""
    abnormality_name_recall: float
    """Share of their gold abnormality names that appear in the pair's abnormalities."""
    patients_in_two_splits: int
    """Patients (by pipeline patient_id, and by gold patient_key when the study truth is given) in >1 split."""
    n_pairs_without_gold: int = 0
    """Pairs of an organ the generator did not draw for that study (not scored)."""
    disagreements: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DISAGREEMENT_COLUMNS), compare=False, repr=False)
    """One row per status disagreement ("status") and per missed abnormal organ ("abnormal_missed")."""

    def summary(self) -> str:
        return (
            f"status agreement {self.status_agreement:.1%} of {self.n_scored} pairs; "
            f"abnormal recall {self.abnormal_recall:.3f} of {self.n_abnormal_gold} organs "
            f"(names {self.abnormality_name_recall:.3f}); patients in two splits: {self.patients_in_two_splits}; "
            f"disagreements: {len(self.disagreements)}"
        )


def keyed_gold(gold: pd.DataFrame) -> pd.DataFrame:
    """The gold with the pipeline's ``study_id`` and ``report_id`` pseudonyms added."""
    g = gold.copy()
    uids = {u: pseudonym("study", u) for u in g["study_uid"].dropna().unique()}
    accs = {a: pseudonym("report", a) for a in g["accession"].dropna().unique() if str(a).strip()}
    g["study_id"] = g["study_uid"].map(uids)
    g["report_id"] = g["accession"].map(accs)
    return g


def _as_list(v) -> list:
    return [] if v is None or (isinstance(v, float) and pd.isna(v)) else list(v)


def score_pairs(
    grounded_pairs: pd.DataFrame,
    pair_exclusions: pd.DataFrame,
    gold: pd.DataFrame,
    studies_truth: pd.DataFrame | None = None,
) -> PairScore:
    """Agreement of pair statuses with the gold report status, recall of abnormal organs, and split leakage."""
    g = keyed_gold(gold)
    if "report_abnormalities" in g:  # pairs come from the report: names are scored against what it says
        g["abnormalities"] = g["report_abnormalities"]
    gcols = ["study_id", "organ", "report_status", "image_status", "abnormalities", "in_image", "cut_by_fov"]
    gold_k = g[gcols].rename(columns={"abnormalities": "gold_abnormalities"})
    gold_k = gold_k.rename(columns={"report_status": "gold_report_status", "image_status": "gold_image_status"})

    p = grounded_pairs[["study_id", "organ", "status", "text_source", "abnormalities", "text"]]
    p = p.rename(columns={"status": "pair_status", "abnormalities": "pair_abnormalities"})
    scored = p.merge(gold_k, on=["study_id", "organ"], how="inner")
    n_without_gold = len(p) - len(scored)
    agree = (scored["pair_status"] == scored["gold_report_status"]) | (
        (scored["gold_report_status"] == "not_mentioned")
        & (scored["pair_status"] == "normal")
        & (scored["text_source"] == "template")
    )
    status_rows = scored[~agree].assign(kind="status")

    # Abnormal organs the pairs must carry: abnormal in the image, reported abnormal, visible, not excluded.
    excluded = pair_exclusions.dropna(subset=["organ"])[["study_id", "organ", "reason"]]
    excluded = excluded.drop_duplicates(["study_id", "organ"]).rename(columns={"reason": "exclusion_reason"})
    target = gold_k[
        (gold_k["gold_image_status"] == "abnormal") & (gold_k["gold_report_status"] == "abnormal") & gold_k["in_image"].astype(bool)
    ]
    target = target.merge(excluded, on=["study_id", "organ"], how="left")
    # a study the pipeline never saw (ingest rejected it) has no pairs and no exclusions: not a pairing miss
    target = target[target["exclusion_reason"].isna() & target["study_id"].isin(_seen_studies(grounded_pairs, pair_exclusions))]
    target = target.merge(p, on=["study_id", "organ"], how="left")
    hit = target["pair_status"] == "abnormal"
    names_total = sum(len(_as_list(a)) for a in target["gold_abnormalities"])
    names_hit = sum(
        len(set(_as_list(ga)) & set(_as_list(pa))) for ga, pa in zip(target["gold_abnormalities"], target["pair_abnormalities"])
    )
    missed = target[~hit].assign(kind="abnormal_missed")

    leaks = _leaking_patients(grounded_pairs, studies_truth)
    disagreements = pd.concat(
        [status_rows.reindex(columns=DISAGREEMENT_COLUMNS), missed.reindex(columns=DISAGREEMENT_COLUMNS)], ignore_index=True
    )
    return PairScore(
        n_pairs=len(p),
        n_scored=len(scored),
        status_agreement=float(agree.mean()) if len(scored) else float("nan"),
        n_abnormal_gold=len(target),
        abnormal_recall=float(hit.mean()) if len(target) else float("nan"),
        abnormality_name_recall=names_hit / names_total if names_total else float("nan"),
        patients_in_two_splits=leaks,
        n_pairs_without_gold=n_without_gold,
        disagreements=disagreements.sort_values(["kind", "study_id", "organ"]).reset_index(drop=True),
    )


def _seen_studies(grounded_pairs: pd.DataFrame, pair_exclusions: pd.DataFrame) -> set:
    return set(grounded_pairs["study_id"]) | set(pair_exclusions["study_id"].dropna())


def _leaking_patients(grounded_pairs: pd.DataFrame, studies_truth: pd.DataFrame | None) -> int:
    """Patients in more than one split, by the pipeline's patient_id and (if given) by the gold patient_key."""
    by_id = grounded_pairs.groupby("patient_id")["split"].nunique()
    leaking = set(by_id[by_id > 1].index)
    if studies_truth is not None and len(grounded_pairs):
        t = studies_truth.dropna(subset=["study_uid"])
        t = t[t["study_uid"].astype(str).str.strip() != ""]
        key = pd.Series(t["patient_key"].to_numpy(), index=[pseudonym("study", u) for u in t["study_uid"]])
        splits = grounded_pairs[["study_id", "split"]].drop_duplicates()
        splits["patient_key"] = splits["study_id"].map(key)
        by_key = splits.dropna(subset=["patient_key"]).groupby("patient_key")["split"].nunique()
        leaking |= {f"key:{k}" for k in by_key[by_key > 1].index}
    return len(leaking)
