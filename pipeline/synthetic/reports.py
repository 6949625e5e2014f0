"""Radiology reports written from the ground-truth findings, and the organ-level gold they imply.

Every sentence carries the organs it speaks about and their status, so the gold follows the
contract's rule exactly: group mentions cover every member, hedged abnormal -> uncertain, the
worst status per organ wins, silence -> not_mentioned. HISTORY names organs without a finding and
is not counted; FINDINGS and IMPRESSION are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.anatomy import LOBES, checked
from pipeline.synthetic.findings import CATALOG, Finding
from pipeline.synthetic.phrases import BANKS
from pipeline.vocab import STATUS_RANK

_SPINE_PREFIX = ("vertebrae_", "sacrum")

# report unit -> (organs it names, section header in organ-by-organ style)
UNITS: dict[str, tuple[tuple[str, ...], str]] = {
    "lungs": (LOBES, "LUNGS"),
    "lung_bases": ((checked("lung_lower_lobe_left"), checked("lung_lower_lobe_right")), "LUNG BASES"),
    "airway": ((checked("trachea"),), "AIRWAY"),
    "heart": ((checked("heart"),), "HEART"),
    "aorta": ((checked("aorta"),), "VASCULATURE"),
    "portal": ((checked("portal_vein_and_splenic_vein"),), "VASCULATURE"),
    "liver": ((checked("liver"),), "LIVER"),
    "gallbladder": ((checked("gallbladder"),), "GALLBLADDER"),
    "spleen": ((checked("spleen"),), "SPLEEN"),
    "pancreas": ((checked("pancreas"),), "PANCREAS"),
    "adrenals": ((checked("adrenal_gland_left"), checked("adrenal_gland_right")), "ADRENALS"),
    "kidneys": ((checked("kidney_left"), checked("kidney_right")), "KIDNEYS"),
    "bowel": ((checked("stomach"), checked("small_bowel"), checked("colon")), "BOWEL"),
    "bladder": ((checked("urinary_bladder"),), "BLADDER"),
    "spine": ((), "BONES"),  # filled with the drawn vertebrae at run time
}
_KIND_UNIT = {
    "liver_mass": "liver",
    "hepatic_cyst": "liver",
    "hepatomegaly": "liver",
    "steatosis": "liver",
    "splenomegaly": "spleen",
    "renal_cyst": "kidneys",
    "renal_stone": "kidneys",
    "renal_mass": "kidneys",
    "pancreatic_mass": "pancreas",
    "gallstones": "gallbladder",
    "lung_nodule": "lungs",
    "pleural_effusion": "lungs",
    "aortic_aneurysm": "aorta",
    "cardiomegaly": "heart",
    "vertebral_fracture": "spine",
}
_HISTORY = (
    "Follow-up of renal cell carcinoma.",
    "Abdominal pain, evaluate liver and pancreas.",
    "Staging of lung cancer.",
    "Weight loss.",
    "Known colon cancer, restaging.",
    "Trauma, back pain.",
    "Elevated liver enzymes.",
    "Shortness of breath.",
    "Hematuria, evaluate kidneys.",
)


@dataclass(frozen=True)
class Report:
    text: str
    status: dict[str, str]  # organ -> normal / abnormal / uncertain (absent = not_mentioned)


@dataclass(frozen=True)
class Misreport:
    """What a report says against what the image shows (``CohortSpec.report_omission`` / ``report_extra``)."""

    reported: list[Finding]  # what the report describes: the image's findings less the omitted, plus the report-only
    omitted: list[Finding]  # in the image, not in the report
    report_only: list[Finding]  # in the report, not in the image


def misreport(
    findings: list[Finding], in_image: set[str], omission: float, extra: float, rng: np.random.Generator
) -> Misreport:
    """Leave out each image finding with probability ``omission``; add findings the image does not show
    so that about ``extra`` of the mentioned ones are report-only (Poisson, mean extra/(1-extra) per kept
    finding), on organs in view and free of findings, hedged a third of the time, as over-calls often are."""
    keep = [f for f in findings if rng.random() >= omission]
    omitted = [f for f in findings if not any(f is k for k in keep)]
    n_extra = int(rng.poisson(extra / (1.0 - extra) * len(keep))) if extra > 0 and keep else 0
    busy = {o for f in findings for o in f.organs}
    options = [(k.kind, o) for k in CATALOG.values() for o in k.organs if o in in_image and o not in busy]
    added: list[Finding] = []
    for _ in range(n_extra):
        options = [(k, o) for k, o in options if o not in busy]
        if not options:
            break
        kind, organ = options[int(rng.integers(len(options)))]
        size = (
            round(float(rng.uniform(5.0, 30.0)))
            if kind
            not in (
                "cardiomegaly",
                "steatosis",
                "pleural_effusion",
                "vertebral_fracture",
                "hepatomegaly",
                "splenomegaly",
            )
            else None
        )
        if kind == "hepatomegaly":
            size = round(float(rng.uniform(180.0, 210.0)))
        elif kind == "splenomegaly":
            size = round(float(rng.uniform(130.0, 160.0)))
        elif kind == "aortic_aneurysm":
            size = round(float(rng.uniform(35.0, 50.0)))
        added.append(Finding(kind, (organ,), size, hedged=bool(rng.random() < 1 / 3)))
        busy.add(organ)
    return Misreport(keep + added, omitted, added)


def _size(mm: float | None, rng: np.random.Generator) -> str:
    if mm is None:
        return ""
    if rng.random() < 0.5:
        return f"{mm / 10:.1f} cm"
    if rng.random() < 0.5:
        return f"{int(round(mm))} mm"
    return f"{mm / 10:.1f} x {mm * rng.uniform(0.6, 0.9) / 10:.1f} cm"


def _fill(template: str, f: Finding | None, size: str) -> str:
    side = lobe = level = sides = bases = ""
    if f is not None:
        o = f.organs
        side = "right" if o[0].endswith("_right") else "left"
        if o[0].startswith("lung_"):
            parts = o[0].split("_")  # lung_upper_lobe_right
            lobe = f"{parts[3]} {parts[1]} lobe"
        if o[0].startswith("vertebrae_"):
            level = o[0].split("_")[1]
        sides = "bilateral" if len(o) == 2 else side
        bases = "lung bases" if len(o) == 2 else f"{side} lung base"
    text = template.format(
        size=size,
        side=side,
        Side=side.capitalize(),
        lobe=lobe,
        level=level,
        sides=sides,
        Sides=sides.capitalize(),
        bases=bases,
    )
    return text[0].upper() + text[1:]


# the units in the order a report describes them
_UNIT_ORDER = (
    "airway",
    "lungs",
    "lung_bases",
    "heart",
    "aorta",
    "liver",
    "gallbladder",
    "spleen",
    "pancreas",
    "portal",
    "adrenals",
    "kidneys",
    "bowel",
    "bladder",
    "spine",
)


def write_report(
    findings: list[Finding],
    in_image: set[str],
    drawn: tuple[str, ...],
    fov: str,
    rng: np.random.Generator,
    *,
    reserved: bool = False,
    comparison: str | None = None,
    radiologist: str = "",
) -> Report:
    """The report text and each mentioned organ's status."""
    bank = BANKS["reserved" if reserved else "default"]
    spine = tuple(o for o in drawn if o.startswith(_SPINE_PREFIX))
    units = {u: (spine if u == "spine" else organs, header) for u, (organs, header) in UNITS.items()}
    pick = lambda key: str(bank[key][int(rng.integers(len(bank[key])))])  # noqa: E731
    status: dict[str, str] = {}
    by_unit: dict[str, list[str]] = {}

    def say(unit: str, text: str, organs: tuple[str, ...], st: str) -> None:
        by_unit.setdefault(unit, []).append(text)
        for o in organs:
            if o not in status or STATUS_RANK[st] > STATUS_RANK[status[o]]:
                status[o] = st

    impression: list[str] = []
    abnormal_units: set[str] = set()
    for f in findings:
        size = _size(f.size_mm, rng)
        key = f.kind + ("?" if f.hedged else "")
        unit = _KIND_UNIT[f.kind]
        say(unit, _fill(pick(key), f, size), f.organs, "uncertain" if f.hedged else "abnormal")
        impression.append(_fill(pick("imp:" + key), f, size))
        abnormal_units.add(unit)
        if f.kind == "pleural_effusion" and len(f.organs) == 1:
            abnormal_units.add("lung_bases")

    # normal statements: only about organs fully in view and free of findings, or "otherwise" forms
    abnormal_organs = {o for f in findings for o in f.organs}
    for unit in _UNIT_ORDER:
        organs = units[unit][0]
        # a unit is described only when fully in view; the spine when any level is (it is long)
        seen = any if unit == "spine" else all
        if not organs or not seen(o in in_image for o in organs):
            continue
        if unit == "lung_bases" and all(o in in_image for o in LOBES):
            continue  # the whole lungs are reported instead
        if unit in abnormal_units or any(o in abnormal_organs for o in organs):
            if unit == "lungs" and rng.random() < 0.7:
                say(unit, pick("normal:lungs_other"), organs, "normal")
            elif unit == "spine" and rng.random() < 0.7:
                say(unit, pick("normal:spine_other"), organs, "normal")
            elif unit == "kidneys":
                for o in organs:
                    if o not in abnormal_organs and rng.random() < 0.7:
                        say(unit, _fill(pick("normal:kidney_one"), Finding("", (o,)), ""), (o,), "normal")
            continue
        if rng.random() < 0.75:  # silence about the rest
            say(unit, pick(f"normal:{unit}"), organs, "normal")

    return Report(_report_text(by_unit, units, impression, fov, comparison, radiologist, rng), status)


def _report_text(
    by_unit: dict[str, list[str]],
    units: dict[str, tuple[tuple[str, ...], str]],
    impression: list[str],
    fov: str,
    comparison: str | None,
    radiologist: str,
    rng: np.random.Generator,
) -> str:
    """The report laid out in its sections, FINDINGS by unit under organ headers or as one paragraph (drawn)."""
    organ_style = rng.random() < 0.5
    lines = [f"EXAMINATION: CT {fov.replace('_', ' ').upper()} WITH CONTRAST", ""]
    lines += ["HISTORY: " + str(_HISTORY[int(rng.integers(len(_HISTORY)))]), ""]
    lines += ["TECHNIQUE: Helical acquisition after intravenous contrast; axial and coronal reconstructions.", ""]
    lines += ["COMPARISON: " + (comparison or "None."), "", "FINDINGS:"]
    for unit in _UNIT_ORDER:
        if unit not in by_unit:
            continue
        text = " ".join(by_unit[unit])
        lines.append(f"{units[unit][1]}: {text}" if organ_style else text)
    if not organ_style:  # paragraph style: one block of prose
        head = lines.index("FINDINGS:")
        lines[head + 1 :] = [" ".join(lines[head + 1 :])]
    lines += ["", "IMPRESSION:"]
    if impression:
        lines += [f"{n}. {s}" for n, s in enumerate(impression, 1)]
    else:
        lines.append("1. No acute abnormality.")
    if radiologist:
        lines += ["", f"Electronically signed by: {radiologist}"]
    return "\n".join(lines)
