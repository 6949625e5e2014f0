"""Report corpora for bench/reports.py and accuracy runs, without painting volumes.

`synthetic(n, seed, reserved)` draws findings and writes reports with the synthetic generator's own
report writer (pipeline.synthetic.reports.write_report) and returns (reports, gold) like
generate_cohort's reports.csv and truth/organ_gold.parquet (the organ set and field of view are drawn
here, lesion sizes uniformly). Use generate_cohort for the full-fidelity cohort.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.synthetic.anatomy import drawn_organs
from pipeline.synthetic.findings import alterations, sample_findings
from pipeline.synthetic.reports import write_report

_CHEST = ("lung_", "heart", "aorta", "trachea", "esophagus", "vertebrae_T", "atrial", "pulmonary", "rib_", "sternum")
_ABDOMEN = ("liver", "spleen", "kidney", "gallbladder", "pancreas", "adrenal", "stomach", "small_bowel", "colon",
            "urinary_bladder", "aorta", "portal", "vertebrae_L", "vertebrae_T12", "inferior_vena", "duodenum", "sacrum")


def synthetic(n: int, seed: int, reserved: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    drawn = drawn_organs()
    reports, gold = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 7])
        fov = ("chest", "abdomen_pelvis", "chest_abdomen_pelvis")[int(rng.integers(3))]
        prefixes = {"chest": _CHEST, "abdomen_pelvis": _ABDOMEN, "chest_abdomen_pelvis": _CHEST + _ABDOMEN}[fov]
        visible = {o for o in drawn if o.startswith(prefixes)}
        if fov == "abdomen_pelvis":
            visible |= {"lung_lower_lobe_left", "lung_lower_lobe_right", "heart"}
        findings = sample_findings(rng, visible)
        _, findings = alterations(findings, rng)
        findings = [f if f.size_mm is not None or f.kind in ("steatosis", "cardiomegaly", "pleural_effusion")
                    else type(f)(f.kind, f.organs, float(np.round(rng.uniform(4, 45))), f.hedged) for f in findings]
        report = write_report(findings, visible, drawn, fov, rng, reserved=reserved, radiologist="Dr. A. Example")
        acc = f"ACC{seed}-{i:06d}"
        reports.append({"AccessionNumber": acc, "ReportText": report.text})
        by_organ: dict[str, set[str]] = {}
        for f in findings:
            for o in f.organs:
                by_organ.setdefault(o, set()).add(f.canonical)
        for o in drawn:
            gold.append({"accession": acc, "organ": o, "report_status": report.status.get(o, "not_mentioned"),
                         "abnormalities": sorted(by_organ.get(o, set()))})
    return pd.DataFrame(reports), pd.DataFrame(gold)


# Sentences US-style CT reports carry besides organ findings (technique detail, nodes, soft tissues,
# incidental and comparison wording); appended to reach a real report length (~300 tokens).
_FILLER = (
    "No mediastinal, hilar, or axillary lymphadenopathy by CT size criteria.",
    "The thyroid gland is unremarkable in appearance.",
    "The central airways are patent without endobronchial lesion.",
    "There is mild bibasilar dependent atelectasis.",
    "No pericardial effusion. Coronary artery calcifications are present.",
    "Mild atherosclerotic calcification of the thoracic aorta without aneurysmal dilatation.",
    "The esophagus is normal in caliber.",
    "No retroperitoneal or mesenteric lymphadenopathy.",
    "No free fluid or free air in the abdomen or pelvis.",
    "The appendix is normal in appearance.",
    "Mild degenerative changes of the thoracolumbar spine with small anterior osteophytes.",
    "The soft tissues of the chest and abdominal wall are unremarkable.",
    "Small fat-containing umbilical hernia.",
    "The urinary bladder is partially distended and otherwise unremarkable.",
    "The prostate is mildly enlarged, measuring 5.2 cm in transverse dimension.",
    "Sigmoid diverticulosis without evidence of diverticulitis.",
    "The pancreatic duct is not dilated; no peripancreatic fluid collection.",
    "The common bile duct measures 4 mm, within normal limits.",
    "Scattered subcentimeter hypodensities in the kidneys are too small to characterize, likely cysts.",
    "Both adrenal glands are normal in thickness without nodules.",
    "The portal vein, splenic vein and superior mesenteric vein are patent.",
    "Calcified granuloma in the right upper lobe, unchanged and benign.",
    "Trace right pleural effusion is not excluded; no pneumothorax.",
    "Postsurgical changes of cholecystectomy with surgical clips in the gallbladder fossa.",
    "No acute osseous abnormality; no suspicious lytic or blastic lesion.",
    "Compared with the prior examination, there has been no significant interval change.",
    "Nonspecific subcentimeter mesenteric lymph nodes, likely reactive.",
    "Mild centrilobular emphysema in the upper lobes.",
    "Stable 3 mm nodule in the left lower lobe, previously 3 mm, compatible with a benign process.",
    "The visualized lung bases are clear without consolidation.",
)


def pad_to_length(text: str, rng: np.random.Generator, target_words: int = 240) -> str:
    """Append filler sentences to the FINDINGS section until the report has about target_words words."""
    extra = []
    words = len(text.split())
    for i in rng.permutation(len(_FILLER)):
        if words >= target_words:
            break
        extra.append(_FILLER[int(i)])
        words += len(_FILLER[int(i)].split())
    if "\n\nIMPRESSION:" in text:
        head, tail = text.split("\n\nIMPRESSION:", 1)
        return head + " " + " ".join(extra) + "\n\nIMPRESSION:" + tail
    return text + "\n" + " ".join(extra)
