"""Studies as training items: a crop of the canonical volume and label map, with its pairs.

One item is one study: the volume crop (HU window -> [-1, 1]), the label map on the same grid, its
organ-text pairs, its abnormality pairs (positive + dictionary negatives) and its report text.
Augmentation keeps laterality (no flips): a small shift of the crop and an intensity jitter, drawn
from a generator seeded by (seed, epoch, study index) -- so an item does not depend on which worker
or process loads it, and a resumed run sees the very same batches.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from model.config import DataConfig
from model.preprocess import Preprocessing, crop_centre, prepare_study
from model.text import readable_organ, text_id
from pipeline.volume import Volume, load_nifti

log = logging.getLogger(__name__)

NORMAL = "normal"  # the `abnormality` of a normal organ's dictionary row


@dataclass(frozen=True)
class OrganPair:
    organ: str
    label: int  # v2 index
    text: str
    normal: bool


@dataclass(frozen=True)
class AbnormalityPair:
    organ: str
    label: int
    abnormality: str
    positive: str
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class StudyRecord:
    study_id: str
    volume_path: Path
    mask_path: Path
    organs: tuple[OrganPair, ...]
    abnormalities: tuple[AbnormalityPair, ...]
    text: str  # findings + impression ("" when study_texts has no row)


def _resolve(root: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def dictionary_text(abnormality: str, organ: str) -> str:
    """An abnormality as a dictionary phrase, the form of the `negatives` column: 'mass of the liver'."""
    return f"{abnormality} of the {readable_organ(organ)}"


def normal_text(organ: str) -> str:
    """The dictionary phrase of an organ without abnormality: 'normal liver'."""
    return f"normal {readable_organ(organ)}"


def named_text(organ: str, text: str) -> str:
    """An organ pair's text led by the organ's name: 'heart: Cardiomegaly.'."""
    return f"{readable_organ(organ)}: {text}"


def organ_dictionary(ap: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Per organ, the abnormalities the split's abnormality pairs name for it (sorted)."""
    out: dict[str, set[str]] = {}
    for organ, abn in zip(ap.get("organ", []), ap.get("abnormality", [])):
        out.setdefault(str(organ), set()).add(str(abn))
    return {o: tuple(sorted(a)) for o, a in out.items()}


def _dictionary_rows(
    rows: pd.DataFrame, organs: Sequence[OrganPair], vocab: dict[str, tuple[str, ...]] | None, positive: str
) -> tuple[AbnormalityPair, ...]:
    """One study's dictionary rows: its abnormality pairs, then (with a split ``vocab``) its normal organs.
    ``vocab`` None: the table's `negatives` column, abnormal organs only."""
    true = {(str(r.organ), str(r.abnormality)) for r in rows.itertuples()}
    true_text = {(o, dictionary_text(a, o)) for o, a in true}

    def negatives(organ: str, table: Sequence[str]) -> tuple[str, ...]:
        if vocab is None:
            return tuple(n for n in table if (organ, n) not in true_text)
        return tuple(dictionary_text(a, organ) for a in vocab.get(organ, ()) if (organ, a) not in true)

    out = [
        AbnormalityPair(
            r.organ, int(r.index_v2), str(r.abnormality),
            dictionary_text(str(r.abnormality), r.organ) if positive == "dictionary" else str(r.positive_text),
            negatives(r.organ, list(r.negatives)) + (() if vocab is None else (normal_text(r.organ),)),
        )
        for r in rows.itertuples()
    ]
    if vocab is not None:
        out += [AbnormalityPair(o.organ, o.label, NORMAL, normal_text(o.organ), negatives(o.organ, []))
                for o in organs if o.normal and vocab.get(o.organ)]
    return tuple(out)


def read_studies(
    data_root: str | os.PathLike,
    split: str = "train",
    include_uncertain: bool = False,
    abnormality_positive: str = "dictionary",
    dictionary: str = "split",
    organ_text: str = "named",
) -> list[StudyRecord]:
    """Group the pair tables by study, in study_id order.

    ``abnormality_positive``, ``dictionary`` and ``organ_text``: see ``DataConfig``. Either way, a dictionary
    negative naming another abnormality the same organ has in this study is dropped (it is true).
    """
    if abnormality_positive not in ("dictionary", "report"):
        raise ValueError(f"abnormality_positive must be 'dictionary' or 'report', not {abnormality_positive!r}")
    if dictionary not in ("split", "table"):
        raise ValueError(f"dictionary must be 'split' or 'table', not {dictionary!r}")
    if organ_text not in ("named", "report"):
        raise ValueError(f"organ_text must be 'named' or 'report', not {organ_text!r}")
    root = Path(data_root)
    tables = root / "tables"
    # rows of other splits are never read (filtered by the parquet reader), so training on "train"
    # cannot see a test label or report
    gp = pd.read_parquet(tables / "grounded_pairs.parquet", filters=[("split", "==", split)])
    if not include_uncertain:
        gp = gp[gp["status"] != "uncertain"]
    ids = sorted(gp["study_id"].unique())
    ap_path, st_path = tables / "abnormality_pairs.parquet", tables / "study_texts.parquet"
    ap = pd.read_parquet(ap_path, filters=[("study_id", "in", ids)]) if ap_path.exists() and ids else pd.DataFrame(columns=["study_id"])
    st = pd.read_parquet(st_path, filters=[("study_id", "in", ids)]) if st_path.exists() and ids else pd.DataFrame(columns=["study_id", "text"])
    texts = dict(zip(st["study_id"], st["text"]))
    ap_by = {k: g for k, g in ap.groupby("study_id")} if len(ap) else {}
    vocab = organ_dictionary(ap) if dictionary == "split" else None
    out = []
    for sid, g in gp.sort_values(["study_id", "index_v2", "pair_id"]).groupby("study_id", sort=True):
        organs = tuple(
            OrganPair(r.organ, int(r.index_v2), named_text(r.organ, str(r.text)) if organ_text == "named" else str(r.text),
                      r.status == "normal")
            for r in g.itertuples()
        )
        rows = ap_by[sid].sort_values("pair_id") if sid in ap_by else ap.iloc[:0]
        abn = _dictionary_rows(rows, organs, vocab, abnormality_positive)
        first = g.iloc[0]
        out.append(
            StudyRecord(
                study_id=str(sid),
                volume_path=_resolve(root, first["volume_path"]),
                mask_path=_resolve(root, first["mask_path"]),
                organs=organs,
                abnormalities=abn,
                text=str(texts.get(sid, "")),
            )
        )
    return out


class StudyDataset(Dataset):
    """Items of one split. Decoded volumes and masks stay in memory up to ``cache_mb`` per loader process
    (least recently used first out): every epoch reads every study again, and decompressing its
    .nii.gz cost a third of a demo training step (bench/train.py)."""

    def __init__(self, data_root: str | os.PathLike, config: DataConfig, split: str = "train", train: bool = True, seed: int = 0,
                 cache_mb: float = 1024):
        self.config, self.train, self.seed = config, train, seed
        self.cache_bytes, self._cache = cache_mb * 2**20, OrderedDict()
        self.studies = read_studies(data_root, split, config.include_uncertain, config.abnormality_positive, config.dictionary,
                                    config.organ_text)
        self.preprocessing = Preprocessing.of(config)  # the deterministic part, shared with evaluation
        self.epoch = 0
        log.info("%d %s studies, %d organ pairs", len(self.studies), split, sum(len(s.organs) for s in self.studies))

    def set_epoch(self, epoch: int) -> None:
        """Augmentation depends on the epoch; call before creating the epoch's iterator."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s, cfg = self.studies[index], self.config
        rng = np.random.default_rng([self.seed, self.epoch, index])
        ct, labels = self._load(index)
        centre_on = [o.label for o in s.organs]
        if cfg.crop_center == "random_organ" and centre_on:
            centre_on = [centre_on[rng.integers(len(centre_on))] if self.train else centre_on[0]]
        centre = crop_centre(labels.array, centre_on if cfg.crop_center != "body" else [], ct.array)
        if self.train and cfg.max_shift:
            centre = centre + rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=3)
        p = prepare_study(ct, labels, [o.label for o in s.organs], self.preprocessing, centre=centre, study_id=s.study_id)
        x = p.volume
        if self.train and cfg.intensity_jitter:
            scale, shift = rng.uniform(-1, 1, size=2) * cfg.intensity_jitter
            x = x * np.float32(1 + scale) + np.float32(shift)
        keep = set(p.kept)
        return {
            "study_id": s.study_id,
            "volume": torch.from_numpy(np.ascontiguousarray(x))[None],  # (1, D, H, W)
            "labels": torch.from_numpy(p.labels.astype(np.int16)),  # (D, H, W)
            "organs": [o for o in s.organs if o.label in keep],
            "abnormalities": [a for a in s.abnormalities if a.label in keep],
            "max_negatives": cfg.max_negatives,
            "text": s.text,
        }

    def _load(self, index: int) -> tuple[Volume, Volume]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        s = self.studies[index]
        pair = load_nifti(s.volume_path), load_nifti(s.mask_path)
        self._cache[index] = pair
        size = lambda p: p[0].array.nbytes + p[1].array.nbytes  # noqa: E731
        while self._cache and sum(map(size, self._cache.values())) > self.cache_bytes:
            self._cache.popitem(last=False)
        return pair


@dataclass
class Batch:
    """A collated batch; texts are deduplicated into ``texts`` and referenced by index."""

    study_ids: list[str]
    volume: torch.Tensor  # (b, 1, D, H, W) float
    labels: torch.Tensor  # (b, D, H, W) int16, v2 indices
    organ_index: torch.Tensor  # (n, 2) long: (batch item, v2 label)
    organ_text_idx: torch.Tensor  # (n,) into texts
    organ_normal: torch.Tensor  # (n,) bool
    abn_index: torch.Tensor  # (m, 2)
    abn_positive_idx: torch.Tensor  # (m,)
    abn_negative_idx: torch.Tensor  # (m, k), -1 = padding
    study_text_idx: torch.Tensor  # (b,)
    texts: list[str]  # (u,) distinct texts
    text_ids: torch.Tensor  # (u,) int64 hash ids, equal <=> same text
    organ_names: list[str]
    abnormality_names: list[str]

    def __len__(self) -> int:
        return len(self.study_ids)


def collate(items: list[dict[str, Any]]) -> Batch:
    texts: dict[str, int] = {}

    def tid(t: str) -> int:
        return texts.setdefault(t, len(texts))

    organ_index, organ_text, normal, names = [], [], [], []
    abn_index, pos, negs, abn_names = [], [], [], []
    k = max([len(a.negatives[: it["max_negatives"]]) for it in items for a in it["abnormalities"]], default=0)
    for b, it in enumerate(items):
        for o in it["organs"]:
            organ_index.append((b, o.label))
            organ_text.append(tid(o.text))
            normal.append(o.normal)
            names.append(o.organ)
        for a in it["abnormalities"]:
            abn_index.append((b, a.label))
            pos.append(tid(a.positive))
            row = [tid(t) for t in a.negatives[: it["max_negatives"]] if t != a.positive]
            negs.append(row + [-1] * (k - len(row)))
            abn_names.append(a.abnormality)
    study_text = [tid(it["text"]) for it in items]
    long = dict(dtype=torch.long)
    return Batch(
        study_ids=[it["study_id"] for it in items],
        volume=torch.stack([it["volume"] for it in items]),
        labels=torch.stack([it["labels"] for it in items]),
        organ_index=torch.tensor(organ_index, **long).view(-1, 2),
        organ_text_idx=torch.tensor(organ_text, **long),
        organ_normal=torch.tensor(normal, dtype=torch.bool),
        abn_index=torch.tensor(abn_index, **long).view(-1, 2),
        abn_positive_idx=torch.tensor(pos, **long),
        abn_negative_idx=torch.tensor(negs, **long).view(-1, k),
        study_text_idx=torch.tensor(study_text, **long),
        texts=list(texts),
        text_ids=torch.tensor([text_id(t) for t in texts], dtype=torch.long),
        organ_names=names,
        abnormality_names=abn_names,
    )


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this process's share of each GLOBAL batch, resumable mid-epoch.

    Unlike ``DistributedSampler`` (which deals indices round-robin, so the global batch depends on
    the number of processes, and always restarts at the epoch's beginning), the global batch at
    step t is the same for any world size -- rank r takes the r-th slice of it -- and
    ``state_dict()``/``load_state_dict()`` restart at the exact batch. The last incomplete global
    batch of an epoch is dropped.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
        if n < batch_size:
            raise ValueError(f"{n} studies cannot fill one global batch of {batch_size}")
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.local = batch_size // world_size
        self.epoch, self.start = 0, 0

    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        for t in range(self.start, self.batches_per_epoch()):
            global_batch = perm[t * self.batch_size : (t + 1) * self.batch_size]
            yield global_batch[self.rank * self.local : (self.rank + 1) * self.local]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start}
