"""Organ crops as training items: one item is one (study, organ) pair of the training split.

An item is the organ's crop (``model.preprocess.organ_crop``: intensities, mask, pooling region, size), its report
text, its class's name, and one dictionary row per abnormality its class's dictionary holds (the abnormalities the
split's reports name for that class): an affirmed and a negated phrase in a training phrasing drawn per step, and
whether the organ has it. Batches are drawn per step by ``OrganBatchSampler``, a pure function of (seed, step): the
grounded model's of a few organ classes with several instances each and a floor of abnormal organs, the global model's
of a few studies with several organs each. Augmentation keeps laterality (no flips): a small shift of the crop and an
intensity jitter, drawn from a generator seeded by (seed, step, position) -- so an item does not depend on which worker
or process loads it, and a resumed run sees the very same batches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from model.config import TrainConfig
from model.preprocess import OrganBoxes, Preprocessing, organ_crop, organ_scales
from model.text import readable_organ, text_id
from pipeline.vocab import counted
from pipeline.volume import Volume, load_nifti

log = logging.getLogger(__name__)

# Training phrasings of the dictionary: none is an evaluation prompt or its form (model.prompts,
# tests/test_eval_zero_shot.py), so zero-shot scores test whether the text side learned what negation means.
AFFIRMED = ("{abn} of the {organ}", "{organ} with {abn}", "{organ}: {abn}", "{organ} showing {abn}")
NEGATED = ("no {abn} of the {organ}", "{organ} without {abn}", "{organ}: no {abn}", "{organ} free of {abn}")
UNREMARKABLE = "The {organ} is unremarkable."  # pipeline.pairs.PairConfig.normal_template: an unmentioned organ's text


@dataclass(frozen=True)
class OrganItem:
    study: int  # index of its study in ``OrganDataset.studies``
    organ: str
    label: int  # v2 index
    text: str
    findings: tuple[str, ...]  # the abnormalities the report gives it, sorted; () = normal


@dataclass(frozen=True)
class StudyRecord:
    study_id: str
    volume_path: Path
    mask_path: Path
    text: str  # findings + impression ("" when study_texts has no row)


def _resolve(root: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def affirmed_text(abnormality: str, organ: str, form: int = 0) -> str:
    """A dictionary phrase stating the abnormality: 'mass of the liver'."""
    return AFFIRMED[form % len(AFFIRMED)].format(abn=abnormality, organ=readable_organ(organ))


def negated_text(abnormality: str, organ: str, form: int = 0) -> str:
    """A dictionary phrase denying it: 'no mass of the liver'."""
    return NEGATED[form % len(NEGATED)].format(abn=abnormality, organ=readable_organ(organ))


def name_text(organ: str) -> str:
    """The organ-identity term's text: the class name as words ('left kidney')."""
    return readable_organ(organ)


def named_text(organ: str, text: str) -> str:
    """An organ pair's text led by the organ's name: 'heart: Cardiomegaly.'."""
    return f"{readable_organ(organ)}: {text}"


def normal_text(organ: str) -> str:
    """The text a normal, unmentioned organ is trained with: 'liver: The liver is unremarkable.'."""
    return named_text(organ, UNREMARKABLE.format(organ=readable_organ(organ)))


def findings_id(findings: Sequence[str]) -> int:
    """One id per abnormality set: organs whose texts name the same abnormalities are positives of each other."""
    return text_id("|".join(sorted(findings)))


def read_pairs(data_root: str | os.PathLike, split: str, include_uncertain: bool = False) -> pd.DataFrame:
    """``grounded_pairs`` rows of ``split`` (rows of other splits are never read: a parquet filter), one per (study,
    organ): worst status, union of abnormalities, the texts joined."""
    path = Path(data_root) / "tables" / "grounded_pairs.parquet"
    gp = pd.read_parquet(path, filters=[("split", "==", split)])
    if not include_uncertain:
        gp = gp[gp["status"] != "uncertain"]
    gp = gp.sort_values(["study_id", "index_v2", "pair_id"])
    for column, missing in (
        ("bbox_mm", None),
        ("cut_by_fov", False),
    ):  # tables from before these columns: no organ scales
        if column not in gp:
            gp[column] = missing
    gp["abnormalities"] = gp["abnormalities"].map(lambda a: tuple(a) if a is not None else ())
    return (
        gp.groupby(["study_id", "organ"], sort=True)
        .agg(
            index_v2=("index_v2", "first"),
            text=("text", lambda t: " ".join(dict.fromkeys(map(str, t)))),
            status=("status", lambda s: "abnormal" if (s == "abnormal").any() else s.iloc[0]),
            abnormalities=("abnormalities", lambda s: tuple(sorted({a for t in s for a in t}))),
            volume_path=("volume_path", "first"),
            mask_path=("mask_path", "first"),
            bbox_mm=("bbox_mm", "first"),
            cut_by_fov=("cut_by_fov", "first"),
        )
        .reset_index()
    )


def organ_extents(pairs: pd.DataFrame) -> dict[str, list[float]]:
    """Per organ class, the longest box side (mm) of each instance the scan does not cut: what organ scales fit."""
    out: dict[str, list[float]] = {}
    for organ, box, cut in zip(pairs["organ"], pairs["bbox_mm"], pairs["cut_by_fov"]):
        if box is not None and not cut:
            b = np.asarray(box, dtype=float)
            out.setdefault(str(organ), []).append(float((b[3:] - b[:3]).max()))
    return out


def read_split(
    data_root: str | os.PathLike, split: str = "train", include_uncertain: bool = False, organ_text: str = "named"
) -> tuple[list[StudyRecord], list[OrganItem], pd.DataFrame]:
    """The split's studies, their organ items (in study_id, label order) and the pairs they came from."""
    if organ_text not in ("named", "report"):
        raise ValueError(f"organ_text must be 'named' or 'report', not {organ_text!r}")
    root = Path(data_root)
    pairs = read_pairs(root, split, include_uncertain)
    ids = sorted(pairs["study_id"].unique())
    st_path = root / "tables" / "study_texts.parquet"
    st = (
        pd.read_parquet(st_path, filters=[("study_id", "in", ids)])
        if st_path.exists() and ids
        else pd.DataFrame(columns=["study_id", "text"])
    )
    texts = dict(zip(st["study_id"], st["text"]))
    studies, items = [], []
    for sid, g in pairs.groupby("study_id", sort=True):
        first = g.iloc[0]
        studies.append(
            StudyRecord(
                str(sid),
                _resolve(root, first["volume_path"]),
                _resolve(root, first["mask_path"]),
                str(texts.get(sid, "")),
            )
        )
        for r in g.sort_values("index_v2").itertuples():
            text = named_text(r.organ, r.text) if organ_text == "named" else str(r.text)
            findings = tuple(r.abnormalities) if r.status == "abnormal" else ()
            items.append(OrganItem(len(studies) - 1, str(r.organ), int(r.index_v2), text, findings))
    return studies, items, pairs


@dataclass(frozen=True)
class Dictionary:
    """Per organ class, the abnormalities the training split's reports name for it, and each (organ, abnormality)
    task's class-balancing weights (positives 0.5 / prevalence, negatives 0.5 / (1 - prevalence))."""

    abnormalities: dict[str, tuple[str, ...]]
    prevalence: dict[tuple[str, str], float]

    @classmethod
    def of(cls, items: Sequence[OrganItem]) -> Dictionary:
        count: dict[str, int] = {}
        pos: dict[tuple[str, str], int] = {}
        for it in items:
            count[it.organ] = count.get(it.organ, 0) + 1
            for a in it.findings:
                pos[(it.organ, a)] = pos.get((it.organ, a), 0) + 1
        abn: dict[str, set[str]] = {}
        for o, a in pos:
            abn.setdefault(o, set()).add(a)
        return cls({o: tuple(sorted(a)) for o, a in sorted(abn.items())}, {k: v / count[k[0]] for k, v in pos.items()})

    def weight(self, organ: str, abnormality: str, positive: bool) -> float:
        p = min(max(self.prevalence.get((organ, abnormality), 0.5), 1e-3), 1 - 1e-3)
        return 0.5 / p if positive else 0.5 / (1 - p)

    def rows(self, item: OrganItem, forms: Sequence[int]) -> list[tuple[str, str, float, float]]:
        """(affirmed text, negated text, label, weight) per abnormality of the item's class, phrased ``forms[i]``."""
        out = []
        for a, form in zip(self.abnormalities.get(item.organ, ()), forms):
            y = a in item.findings
            out.append(
                (
                    affirmed_text(a, item.organ, form),
                    negated_text(a, item.organ, form),
                    float(y),
                    self.weight(item.organ, a, y),
                )
            )
        return out

    def to_record(self) -> dict[str, Any]:
        return {
            "abnormalities": {o: list(a) for o, a in self.abnormalities.items()},
            "prevalence": {f"{o}/{a}": round(p, 6) for (o, a), p in sorted(self.prevalence.items())},
        }


def large_enough(studies: Sequence[StudyRecord], items: Sequence[OrganItem], minimum: int) -> list[OrganItem]:
    """The items whose organ has at least ``minimum`` voxels in its study's label map: the organs evaluation and
    inference crop (a pair's organ can be a speck of the map, e.g. at the edge of the field of view)."""
    if minimum <= 1:
        return list(items)
    counts = {
        s: np.bincount(np.asarray(load_nifti(studies[s].mask_path).array, dtype=np.uint8).ravel(), minlength=256)
        for s in sorted({it.study for it in items})
    }
    return [it for it in items if counts[it.study][it.label] >= minimum]


class OrganDataset(Dataset):
    """Organ items of one split. Items are addressed by ``(step, position, item)`` so that augmentation is a function of
    where the item sits in the run. Decoded volumes and masks stay in memory up to ``cache_mb`` per loader process
    (least recently used first out): decompressing a .nii.gz costs more than cropping it."""

    def __init__(
        self,
        data_root: str | os.PathLike,
        config: TrainConfig,
        split: str = "train",
        train: bool = True,
        preprocessing: Preprocessing | None = None,
        dictionary: Dictionary | None = None,
        cache_mb: float = 2048,
    ):
        self.config, self.train, self.seed = config, train, config.seed
        self.cache_bytes = cache_mb * 2**20
        self._cache: OrderedDict[int, tuple[Volume, np.ndarray, OrganBoxes]] = OrderedDict()
        d = config.data
        self.studies, items, pairs = read_split(data_root, split, d.include_uncertain, d.organ_text)
        minimum = d.preprocessing.min_organ_voxels
        self.items = large_enough(self.studies, items, minimum)
        items = self.items
        # organ scales: the given record's, the config's where it has them (a trained model's), else chosen on this
        # split
        pre = d.preprocessing
        self.preprocessing = preprocessing or (
            pre
            if pre.organ_spacing
            else dataclasses.replace(pre, organ_spacing=organ_scales(organ_extents(pairs), pre))
        )
        self.dictionary = dictionary or Dictionary.of(items)
        self.minimum = minimum
        log.info(
            "%d %s studies, %d organ items (%d abnormal), %d organ classes",
            len(self.studies),
            split,
            len(items),
            sum(bool(i.findings) for i in items),
            len({i.organ for i in items}),
        )

    def __len__(self) -> int:
        return len(self.items)

    def crop(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The item's crop tensors; with ``rng`` (training) shifted and intensity-jittered."""
        it, cfg = self.items[index], self.config.data
        ct, labels, boxes = self._load(it.study)
        shift = (
            rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=3) if rng is not None and cfg.max_shift else (0, 0, 0)
        )
        c = organ_crop(
            ct,
            labels,
            it.label,
            it.organ,
            self.preprocessing,
            boxes,
            shift=shift,
            study_id=self.studies[it.study].study_id,
        )
        x = c.volume
        if rng is not None and cfg.intensity_jitter:
            scale, offset = rng.uniform(-1, 1, size=2) * cfg.intensity_jitter
            x = x * np.float32(1 + scale) + np.float32(offset)
        return {
            "volume": torch.from_numpy(np.ascontiguousarray(x))[None],
            "mask": torch.from_numpy(c.mask),
            "region": torch.from_numpy(c.region),
            "size": torch.from_numpy(c.size),
        }

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        step, position, index = key
        rng = np.random.default_rng([self.seed, step, position]) if self.train else None
        it = self.items[index]
        n_abn = len(self.dictionary.abnormalities.get(it.organ, ()))
        # one phrasing per (step, organ class, abnormality): the class's instances share their dictionary texts, so a
        # batch has fewer distinct texts to read (the text side's layers were two thirds of a step)
        forms = (
            np.random.default_rng([self.seed, step, it.label]).integers(len(AFFIRMED), size=n_abn).tolist()
            if self.train
            else [0] * n_abn
        )
        return {
            **self.crop(index, rng),
            "item": it,
            "study_id": self.studies[it.study].study_id,
            "report": self.studies[it.study].text,
            "dictionary": self.dictionary.rows(it, forms),
        }

    def _load(self, study: int) -> tuple[Volume, np.ndarray, OrganBoxes]:
        if study in self._cache:
            self._cache.move_to_end(study)
            return self._cache[study]
        s = self.studies[study]
        ct, lab = load_nifti(s.volume_path), load_nifti(s.mask_path)
        labels = np.asarray(lab.array)
        entry = (ct, labels, OrganBoxes.of(labels))
        self._cache[study] = entry
        size = lambda e: e[0].array.nbytes + e[1].nbytes  # noqa: E731
        while len(self._cache) > 1 and sum(map(size, self._cache.values())) > self.cache_bytes:
            self._cache.popitem(last=False)
        return entry


@dataclass
class Batch:
    """A collated batch; texts are deduplicated into ``texts`` and referenced by index."""

    study_ids: list[str]  # (s,) distinct studies, in order of first appearance
    volume: torch.Tensor  # (n, 1, D, H, W) float
    mask: torch.Tensor  # (n, D, H, W) float: organ share per voxel
    region: torch.Tensor  # (n, D, H, W) float: pooling-region share per voxel
    size: torch.Tensor  # (n, 4) float
    labels: torch.Tensor  # (n,) long, v2 class
    finding_ids: torch.Tensor  # (n,) long, abnormality-set id
    study_index: torch.Tensor  # (n,) long, into study_ids
    organ_text_idx: torch.Tensor  # (n,) into texts
    name_text_idx: torch.Tensor  # (n,) into texts
    dict_item: torch.Tensor  # (r,) long, into the n items
    dict_affirmed_idx: torch.Tensor  # (r,)
    dict_negated_idx: torch.Tensor  # (r,)
    dict_label: torch.Tensor  # (r,) float
    dict_weight: torch.Tensor  # (r,) float
    study_text_idx: torch.Tensor  # (s,)
    texts: list[str]  # (u,) distinct texts
    text_ids: torch.Tensor  # (u,) int64 hash ids, equal <=> same text
    organ_names: list[str]

    def __len__(self) -> int:
        return len(self.organ_names)


def collate(items: list[dict[str, Any]]) -> Batch:
    texts: dict[str, int] = {}
    studies: dict[str, int] = {}

    def tid(t: str) -> int:
        return texts.setdefault(t, len(texts))

    organ_text: list[int] = []
    names: list[int] = []
    study_index: list[int] = []
    rows: list[tuple[int, int, int, float, float]] = []
    reports: dict[int, str] = {}
    for n, it in enumerate(items):
        item: OrganItem = it["item"]
        organ_text.append(tid(item.text))
        names.append(tid(name_text(item.organ)))
        s = studies.setdefault(it["study_id"], len(studies))
        study_index.append(s)
        reports.setdefault(s, it["report"])
        rows += [(n, tid(aff), tid(neg), y, w) for aff, neg, y, w in it["dictionary"]]
    study_text = [tid(reports[s]) for s in range(len(studies))]
    cols: list[Sequence[Any]] = list(zip(*rows)) if rows else [[], [], [], [], []]
    return Batch(
        study_ids=list(studies),
        volume=torch.stack([it["volume"] for it in items]),
        mask=torch.stack([it["mask"] for it in items]),
        region=torch.stack([it["region"] for it in items]),
        size=torch.stack([it["size"] for it in items]),
        labels=torch.tensor([it["item"].label for it in items], dtype=torch.long),
        finding_ids=torch.tensor([findings_id(it["item"].findings) for it in items], dtype=torch.long),
        study_index=torch.tensor(study_index, dtype=torch.long),
        organ_text_idx=torch.tensor(organ_text, dtype=torch.long),
        name_text_idx=torch.tensor(names, dtype=torch.long),
        dict_item=torch.tensor(cols[0], dtype=torch.long),
        dict_affirmed_idx=torch.tensor(cols[1], dtype=torch.long),
        dict_negated_idx=torch.tensor(cols[2], dtype=torch.long),
        dict_label=torch.tensor(cols[3], dtype=torch.float32),
        dict_weight=torch.tensor(cols[4], dtype=torch.float32),
        study_text_idx=torch.tensor(study_text, dtype=torch.long),
        texts=list(texts),
        text_ids=torch.tensor([text_id(t) for t in texts], dtype=torch.long),
        organ_names=[it["item"].organ for it in items],
    )


class OrganBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Yields this process's share of each GLOBAL batch from ``start`` to ``steps``, as (step, position, item) keys.

    The global batch of step t is a pure function of (seed, t), the same for any world size (rank r takes the r-th
    slice), so a resumed run restarts at the exact batch.
    - grounded: ``batch_size / organs_per_class`` organ classes, ``organs_per_class`` instances each; enough of the
      classes are drawn from those with abnormal training organs, half their instances abnormal, that at least
      ``abnormal_share`` of the crops are abnormal; classes of counted structures are drawn ``counted_weight`` as often.
    - global: ``batch_size / organs_per_study`` studies, ``organs_per_study`` of each study's organs.
    """

    def __init__(self, items: Sequence[OrganItem], config: TrainConfig, rank: int = 0, world_size: int = 1):
        if config.batch_size % world_size:
            raise ValueError(f"global batch {config.batch_size} is not divisible by {world_size} processes")
        self.config, self.rank, self.world_size = config, rank, world_size
        self.local = config.batch_size // world_size
        if config.model.kind == "global" and self.local % config.data.organs_per_study:
            raise ValueError(
                f"{self.local} crops a process would cut studies of {config.data.organs_per_study} organs "
                "in two (the global model embeds a study as the mean of its organs): choose batch_size, "
                "organs_per_study and the number of processes so that each process holds whole studies"
            )
        self.start, self.steps = 0, config.steps * config.grad_accum_steps
        d = config.data
        by_class: dict[str, list[int]] = {}
        by_study: dict[int, list[int]] = {}
        for i, it in enumerate(items):
            by_class.setdefault(it.organ, []).append(i)
            by_study.setdefault(it.study, []).append(i)
        self.classes = sorted(by_class)
        self.members = [np.array(by_class[c]) for c in self.classes]
        self.abnormal = [np.array([i for i in by_class[c] if items[i].findings], dtype=int) for c in self.classes]
        self.class_weight = np.array([d.counted_weight if counted(c) else 1.0 for c in self.classes])
        self.study_members = [np.array(v) for _, v in sorted(by_study.items())]
        self.item_weight = np.array([d.counted_weight if counted(it.organ) else 1.0 for it in items])
        if config.model.kind == "grounded" and not self.classes:
            raise ValueError("no organ items to train on")
        if config.model.kind == "global" and len(self.study_members) < config.batch_size // d.organs_per_study:
            raise ValueError(
                f"{len(self.study_members)} studies cannot fill one global batch of "
                f"{config.batch_size // d.organs_per_study} studies"
            )

    def set_start(self, step: int) -> None:
        self.start = step

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def global_batch(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.config.seed, 7919, step])
        if self.config.model.kind == "global":
            return self._studies(rng)
        return self._classes(rng)

    def _pick(self, rng: np.random.Generator, pool: np.ndarray, k: int, weight: np.ndarray | None = None) -> list[int]:
        p = None if weight is None else weight / weight.sum()
        return rng.choice(pool, size=k, replace=len(pool) < k, p=p).tolist()

    def _classes(self, rng: np.random.Generator) -> list[int]:
        d = self.config.data
        m = d.organs_per_class
        n_classes = self.config.batch_size // m
        with_abn = [c for c in range(len(self.classes)) if len(self.abnormal[c])]
        half = math.ceil(m / 2)
        n_abn = min(len(with_abn), n_classes, math.ceil(d.abnormal_share * self.config.batch_size / half))
        chosen = self._pick(rng, np.array(with_abn, dtype=int), n_abn, self.class_weight[with_abn]) if n_abn else []
        rest = np.array([c for c in range(len(self.classes)) if c not in set(chosen)], dtype=int)
        if n_classes > n_abn and len(rest):
            chosen += self._pick(rng, rest, min(n_classes - n_abn, len(rest)), self.class_weight[rest])
        while len(chosen) < n_classes:  # fewer classes than a batch holds: draw again, with replacement
            chosen += self._pick(rng, np.arange(len(self.classes)), 1, self.class_weight)
        out: list[int] = []
        for j, c in enumerate(chosen):
            if j < n_abn:
                out += self._pick(rng, self.abnormal[c], half) + self._pick(rng, self.members[c], m - half)
            else:
                out += self._pick(rng, self.members[c], m)
        return out

    def _studies(self, rng: np.random.Generator) -> list[int]:
        k = self.config.data.organs_per_study
        studies = rng.choice(len(self.study_members), size=self.config.batch_size // k, replace=False)
        out: list[int] = []
        for s in studies:
            pool = self.study_members[s]
            out += self._pick(rng, pool, k, self.item_weight[pool])
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.steps):
            batch = self.global_batch(step)
            lo = self.rank * self.local
            yield [(step, lo + p, i) for p, i in enumerate(batch[lo : lo + self.local])]

    def state_dict(self) -> dict[str, int]:
        return {"start": self.start}
