"""Public entry points: one report -> findings; a table of reports -> a findings table; aggregation."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from pipeline.report import text as textmod
from pipeline.report.context import build_nlp
from pipeline.report.finding import COLUMNS, Finding, ReportConfig
from pipeline.report.nlp import freeze_heap
from pipeline.vocab import STATUS_RANK

log = logging.getLogger(__name__)
_DEFAULT = ReportConfig()
_MAX_NLP_CHARS = 1_000_000


def prepare(report: str | bytes | None, config: ReportConfig = _DEFAULT) -> tuple[str, str | None]:
    """(clean text, problem): decoding, RTF/HTML residue, line endings, length cap, language check.
    The text is "" when there is nothing to read."""
    note = None
    if report is None or (isinstance(report, float) and report != report):  # None or NaN from pandas
        return "", "empty report"
    if isinstance(report, (bytes, bytearray, memoryview)):
        report, note = textmod.decode(bytes(report))
    if not isinstance(report, str):
        return "", f"not text: {type(report).__name__}"
    text = textmod.clean(report)
    if len(text) > config.max_chars:
        text = text[: config.max_chars]
        note = "; ".join(filter(None, [note, f"truncated to {config.max_chars} characters"]))
    problem = textmod.check(text, config.min_words_for_language_check)
    if problem:
        return "", "; ".join(filter(None, [problem, note]))
    return text, note


def reader(config: ReportConfig = _DEFAULT):
    """The report component of this configuration's pipeline (context.ReportComponent): `read(text)`."""
    nlp = build_nlp(config.skip_sections, config.fast_tokenizer)
    if config.freeze_heap:
        freeze_heap()
    return nlp.get_pipe("ctglip_report")


def extract_findings_checked(
    report: str | bytes | None, config: ReportConfig = _DEFAULT
) -> tuple[list[Finding], str | None]:
    """Findings of one report and a problem (None when clean): "empty report", "not English (...)",
    "not UTF-8: decoded as cp1252", "truncated to N characters". Never raises on bad input."""
    text, problem = prepare(report, config)
    if not text:
        return [], problem
    return reader(config).read(text), problem


def extract_findings(report: str | bytes | None, config: ReportConfig = _DEFAULT) -> list[Finding]:
    """Organ-level findings of one report (FINDINGS, IMPRESSION and header-less text); see Finding."""
    return extract_findings_checked(report, config)[0]


def _frame(ids: Sequence, texts: Sequence, config: ReportConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Findings of a batch as a DataFrame (built column-wise) and the problems of its reports."""
    read = reader(config).read
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    problems: list[dict] = []
    prepared = [prepare(t, config) for t in texts]
    keep = [(i, t) for i, (t, _) in zip(ids, prepared) if t]
    for rid, (_, problem) in zip(ids, prepared):
        if problem:
            problems.append({"report_id": rid, "problem": problem})
    for rid, text in keep:
        fs = read(text)
        cols["report_id"] += [rid] * len(fs)
        for name in COLUMNS[1:]:
            cols[name] += [getattr(f, name) for f in fs]
    cols["negated"] = [list(n) for n in cols["negated"]]
    return findings_frame(cols), problems


def _chunk_job(args) -> tuple[pd.DataFrame, list[dict]]:
    ids, texts, config = args
    return _frame(ids, texts, config)


def findings_frame(columns: dict[str, list]) -> pd.DataFrame:
    """The findings table with stable dtypes (also when empty)."""
    df = pd.DataFrame({c: columns.get(c, []) for c in COLUMNS})
    df["size_mm"] = df["size_mm"].astype("float64")
    df["sentence_index"] = df["sentence_index"].astype("int64")
    return df


def extract_table_checked(
    df: pd.DataFrame,
    text_column: str,
    id_column: str,
    workers: int = 1,
    config: ReportConfig = _DEFAULT,
    chunk_size: int = 2000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(findings: one row per finding with `report_id`, problems: `report_id`, `problem` per flagged report)."""
    ids = df[id_column].tolist()
    texts = df[text_column].tolist()
    if workers <= 1 or len(texts) <= chunk_size:
        findings, problems = _frame(ids, texts, config)
    else:
        jobs = [(ids[i : i + chunk_size], texts[i : i + chunk_size], config) for i in range(0, len(texts), chunk_size)]
        frames, problems = [], []
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for frame, p in pool.map(_chunk_job, jobs):
                frames.append(frame)
                problems += p
        findings = pd.concat(frames, ignore_index=True)
    if problems:
        log.info("%d of %d reports flagged (first: %s)", len(problems), len(texts), problems[0])
    return findings, pd.DataFrame(problems, columns=["report_id", "problem"])


def extract_table(
    df: pd.DataFrame, text_column: str, id_column: str, workers: int = 1, config: ReportConfig = _DEFAULT
) -> pd.DataFrame:
    """One row per finding (columns of `report_findings` + header, sentence_index), `report_id` = id_column."""
    return extract_table_checked(df, text_column, id_column, workers, config)[0]


def organ_status(findings: Iterable[Finding]) -> dict[str, str]:
    """Per organ (or region, for findings without an organ mask): abnormal if any finding is abnormal,
    else uncertain if any is, else normal."""
    out: dict[str, str] = {}
    for f in findings:
        place = f.organ or f.region
        assert place is not None  # a finding names an organ or, without an organ mask, a region
        if place not in out or STATUS_RANK[f.status] > STATUS_RANK[out[place]]:
            out[place] = f.status
    return out


def _key(sentence: str) -> str:
    return " ".join(sentence.lower().split()).rstrip(".")


def organ_texts(findings: Iterable[Finding]) -> dict[str, str]:
    """Per organ (or region): the sentences describing it, in report order, each once (FINDINGS and IMPRESSION
    often repeat one another); a sentence under an organ header keeps the header ("Liver: Normal.")."""
    seen: dict[str, dict[str, str]] = {}
    for f in sorted(findings, key=lambda f: f.sentence_index):
        text = f"{f.header.strip().capitalize()}: {f.sentence}" if f.header else f.sentence
        place = f.organ or f.region
        assert place is not None  # a finding names an organ or, without an organ mask, a region
        seen.setdefault(place, {}).setdefault(_key(text), text)
    return {
        organ: " ".join(s if s.rstrip()[-1:] in ".!?" else s + "." for s in sents.values())
        for organ, sents in seen.items()
    }
