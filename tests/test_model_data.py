"""Training data (model.data): the split's organ items, the dictionary, organ-crop items, collation and the sampler."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from model.data import (
    AFFIRMED,
    NEGATED,
    Dictionary,
    OrganBatchSampler,
    OrganDataset,
    OrganItem,
    collate,
    findings_id,
    name_text,
    read_split,
)
from model.fake_data import make_fake_data_root, tiny_config
from model.preprocess import organ_crop
from pipeline.volume import load_nifti

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_read_split_gives_the_splits_organs_with_named_texts_and_findings(fake_data_root):
    pairs = pd.read_parquet(fake_data_root / "tables" / "grounded_pairs.parquet")
    train = pairs[pairs["split"] == "train"]
    studies, items, _ = read_split(fake_data_root, "train")
    assert [s.study_id for s in studies] == sorted(train["study_id"].unique())
    assert len(items) == len(train)
    for it in items:
        row = train[(train["study_id"] == studies[it.study].study_id) & (train["organ"] == it.organ)].iloc[0]
        assert it.label == row["index_v2"] and it.text == f"{name_text(it.organ)}: {row['text']}"
        assert it.findings == (tuple(row["abnormalities"]) if row["status"] == "abnormal" else ())
    order = [(it.study, it.label) for it in items]
    assert order == sorted(order)
    assert all(s.text.startswith("FINDINGS:") and s.volume_path.is_file() and s.mask_path.is_file() for s in studies)
    val_studies, _, _ = read_split(fake_data_root, "val")
    assert not {s.study_id for s in val_studies} & {s.study_id for s in studies}
    _, report_items, _ = read_split(fake_data_root, "train", organ_text="report")
    assert [it.text for it in report_items] == train.sort_values(["study_id", "index_v2"])["text"].tolist()
    with pytest.raises(ValueError, match="organ_text"):
        read_split(fake_data_root, "train", organ_text="other")


def test_organs_below_the_minimum_of_voxels_are_left_out_of_training_as_of_evaluation(tmp_path):
    """DataConfig.min_organ_voxels: 'an organ with fewer voxels in its label map is not paired'. Evaluation and
    inference leave such an organ out (model.eval.data, model.inference); training must see the same organs."""
    from model.eval import load_eval_data
    from pipeline.volume import Volume, save_nifti

    root = make_fake_data_root(tmp_path, n_studies=4, shape=(48, 48, 40))
    pairs = pd.read_parquet(root / "tables" / "grounded_pairs.parquet")
    sid = pairs["study_id"].iloc[0]
    organ, label = pairs.loc[pairs["study_id"] == sid, ["organ", "index_v2"]].iloc[0]
    mask = load_nifti(root / "masks" / f"{sid}.nii.gz")
    lab = np.asarray(mask.array).copy()
    where = np.argwhere(lab == label)
    lab[lab == label] = 0
    for i, j, k in where[:3]:  # three voxels of it left: below the default minimum of 8
        lab[i, j, k] = label
    save_nifti(Volume(lab, mask.affine), root / "masks" / f"{sid}.nii.gz", dtype=np.uint8)
    cfg = tiny_config()
    ds = OrganDataset(root, cfg, train=False)
    evaluated = load_eval_data(root, ds.preprocessing, splits=("train",))
    assert not ((evaluated.organs["study_id"] == sid) & (evaluated.organs["organ"] == organ)).any()
    trained = {(ds.studies[it.study].study_id, it.organ) for it in ds.items}
    assert (sid, organ) not in trained
    assert trained == set(zip(evaluated.organs["study_id"], evaluated.organs["organ"]))


def test_dictionary_rows_pair_affirmed_and_negated_phrases_per_abnormality_of_the_class():
    items = [OrganItem(0, "liver", 5, "t", ("cyst",)), OrganItem(1, "liver", 5, "t", ("cyst", "mass")),
             OrganItem(2, "liver", 5, "t", ()), OrganItem(3, "liver", 5, "t", ()), OrganItem(0, "spleen", 1, "t", ())]
    d = Dictionary.of(items)
    assert d.abnormalities == {"liver": ("cyst", "mass")}  # no catch-all "normal", no class without abnormalities
    assert d.prevalence == {("liver", "cyst"): 0.5, ("liver", "mass"): 0.25}
    rows = d.rows(items[1], [0, 1])
    assert [(a, n, y) for a, n, y, _ in rows] == [("cyst of the liver", "no cyst of the liver", 1.0),
                                                 ("liver with mass", "liver without mass", 1.0)]
    assert [w for *_, w in rows] == [pytest.approx(0.5 / 0.5), pytest.approx(0.5 / 0.25)]
    normal = d.rows(items[2], [2, 3])
    assert [(a, n, y) for a, n, y, _ in normal] == [("liver: cyst", "liver: no cyst", 0.0),
                                                   ("liver showing mass", "liver free of mass", 0.0)]
    assert [w for *_, w in normal] == [pytest.approx(0.5 / 0.5), pytest.approx(0.5 / 0.75)]
    assert d.rows(items[4], [0]) == []  # a class without abnormalities has no dictionary rows
    assert len(AFFIRMED) == len(NEGATED) and all("{abn}" in f and "{organ}" in f for f in AFFIRMED + NEGATED)
    assert d.to_record() == {"abnormalities": {"liver": ["cyst", "mass"]}, "prevalence": {"liver/cyst": 0.5, "liver/mass": 0.25}}


def test_organ_items_are_the_preprocessing_crops_and_deterministic_in_step_and_position(fake_data_root):
    cfg = tiny_config(data={"max_shift": 1, "intensity_jitter": 0.05})
    ds = OrganDataset(fake_data_root, cfg, train=True)
    plain = OrganDataset(fake_data_root, cfg, train=False, preprocessing=ds.preprocessing, dictionary=ds.dictionary)
    i = next(k for k, it in enumerate(ds.items) if it.findings)
    item = ds[(3, 1, i)]
    n = cfg.data.preprocessing.crop_voxels
    assert item["volume"].shape == (1, n, n, n) and item["mask"].shape == item["region"].shape == (n, n, n)
    assert item["size"].shape == (4,) and item["item"] is ds.items[i]
    torch.testing.assert_close(ds[(3, 1, i)]["volume"], item["volume"])  # same (step, position): the same item
    assert not torch.equal(ds[(4, 1, i)]["volume"], item["volume"])  # another step: another augmentation
    # without augmentation an item is exactly model.preprocess.organ_crop of its study, with the run's preprocessing
    it, study = ds.items[i], ds.studies[ds.items[i].study]
    c = organ_crop(load_nifti(study.volume_path), np.asarray(load_nifti(study.mask_path).array), it.label, it.organ,
                   ds.preprocessing)
    x = plain[(0, 0, i)]
    np.testing.assert_array_equal(x["volume"][0].numpy(), c.volume)
    np.testing.assert_array_equal(x["region"].numpy(), c.region)
    np.testing.assert_array_equal(x["size"].numpy(), c.size)
    # its dictionary rows: one per abnormality of its class, labelled by its findings, in the training phrasings
    abns = ds.dictionary.abnormalities[it.organ]
    assert [row[2] for row in item["dictionary"]] == [float(a in it.findings) for a in abns]
    assert all(any(row[0] == f.format(abn=a, organ=name_text(it.organ)) for f in AFFIRMED)
               for row, a in zip(item["dictionary"], abns))
    assert [row[0] for row in x["dictionary"]] == [AFFIRMED[0].format(abn=a, organ=name_text(it.organ)) for a in abns]


def test_augmentation_shifts_and_rescales_intensity_but_never_flips(fake_data_root):
    """With no shift allowed, an augmented crop is the plain one under one affine intensity map (no flip, no mirror:
    laterality is kept)."""
    cfg = tiny_config(data={"max_shift": 0, "intensity_jitter": 0.1})
    ds = OrganDataset(fake_data_root, cfg, train=True)
    plain = OrganDataset(fake_data_root, cfg, train=False, preprocessing=ds.preprocessing)
    for i in range(0, len(ds), 5):
        a, b = ds[(1, 0, i)]["volume"].numpy().ravel(), plain[(0, 0, i)]["volume"].numpy().ravel()
        slope, offset = np.polyfit(b, a, 1)
        np.testing.assert_allclose(a, slope * b + offset, atol=1e-5)
        assert abs(slope - 1) <= 0.1 + 1e-6 and abs(offset) <= 0.1 + 1e-6 and slope > 0
        np.testing.assert_array_equal(ds[(1, 0, i)]["mask"].numpy(), plain[(0, 0, i)]["mask"].numpy())


def test_collate_deduplicates_texts_and_indexes_them(fake_data_root):
    cfg = tiny_config()
    ds = OrganDataset(fake_data_root, cfg, train=True)
    sampler = OrganBatchSampler(ds.items, cfg)
    keys = next(iter(sampler))
    raw = [ds[k] for k in keys]
    batch = collate(raw)
    n = len(keys)
    assert len(batch) == n and batch.volume.shape == (n, 1, 16, 16, 16) and batch.size.shape == (n, 4)
    assert len(batch.texts) == len(set(batch.texts)) == len(batch.text_ids)
    assert [batch.texts[j] for j in batch.organ_text_idx] == [r["item"].text for r in raw]
    assert [batch.texts[j] for j in batch.name_text_idx] == [name_text(r["item"].organ) for r in raw]
    assert batch.labels.tolist() == [r["item"].label for r in raw]
    assert batch.finding_ids.tolist() == [findings_id(r["item"].findings) for r in raw]
    rows = [(k, row) for k, r in enumerate(raw) for row in r["dictionary"]]
    assert batch.dict_item.tolist() == [k for k, _ in rows]
    assert [batch.texts[j] for j in batch.dict_affirmed_idx] == [row[0] for _, row in rows]
    assert [batch.texts[j] for j in batch.dict_negated_idx] == [row[1] for _, row in rows]
    assert batch.dict_label.tolist() == [row[2] for _, row in rows]
    assert [batch.study_ids[s] for s in batch.study_index] == [r["study_id"] for r in raw]
    assert [batch.texts[j] for j in batch.study_text_idx] == [next(r["report"] for r in raw if r["study_id"] == s)
                                                              for s in batch.study_ids]
    assert findings_id(("cyst", "mass")) == findings_id(("mass", "cyst")) != findings_id(("cyst",))


# --- the sampler: hand-made items ----------------------------------------------------------------


def items_of(n_classes: int = 10, per_class: int = 12, abnormal_classes: int = 4, abnormal_each: int = 3,
             counted: tuple[str, ...] = ()) -> list[OrganItem]:
    names = [f"organ{c}" for c in range(n_classes)] + list(counted)
    out = []
    for c, name in enumerate(names):
        for k in range(per_class):
            sick = c < abnormal_classes and k < abnormal_each
            out.append(OrganItem(k, name, c + 1, f"{name} {k}", ("mass",) if sick else ()))
    return out


def test_batches_are_a_function_of_seed_and_step_whatever_the_world_size_and_resume():
    items = items_of()
    cfg = tiny_config(batch_size=8, steps=6)
    one = OrganBatchSampler(items, cfg)
    batches = list(one)
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)
    assert [[k[0] for k in b] for b in batches] == [[s] * 8 for s in range(6)]
    assert [[k[1] for k in b] for b in batches] == [list(range(8))] * 6  # positions in the global batch
    assert batches == list(OrganBatchSampler(items, cfg))  # deterministic
    assert [k[2] for k in batches[0]] != [k[2] for k in list(OrganBatchSampler(items, tiny_config(batch_size=8, steps=6, seed=1)))[0]]
    for world in (2, 4):
        ranks = [list(OrganBatchSampler(items, cfg, rank=r, world_size=world)) for r in range(world)]
        assert [sum(parts, []) for parts in zip(*ranks)] == batches
    one.set_start(4)
    assert list(one) == batches[4:] and len(one) == 2 and one.state_dict() == {"start": 4}
    with pytest.raises(ValueError, match="not divisible"):
        OrganBatchSampler(items, cfg, rank=0, world_size=3)


def test_grounded_batches_hold_whole_classes_and_a_floor_of_abnormal_organs():
    items = items_of()
    cfg = tiny_config(batch_size=16, steps=40, data={"organs_per_class": 4, "abnormal_share": 0.25})
    sampler = OrganBatchSampler(items, cfg)
    for step in range(40):
        batch = sampler.global_batch(step)
        blocks = [batch[i : i + 4] for i in range(0, 16, 4)]
        assert all(len({items[j].organ for j in block}) == 1 for block in blocks)  # 4 instances of one class each
        assert len({items[block[0]].organ for block in blocks}) == 4  # 4 distinct classes
        assert sum(bool(items[j].findings) for j in batch) >= math.ceil(0.25 * 16)
    # where there are no abnormal organs at all, batches still fill
    healthy = items_of(abnormal_classes=0)
    assert all(len(OrganBatchSampler(healthy, cfg).global_batch(s)) == 16 for s in range(5))
    with pytest.raises(ValueError, match="no organ items"):
        OrganBatchSampler([], cfg)


def test_abnormal_share_is_met_even_where_abnormal_organs_are_rare():
    """Without the floor, 2 abnormal organs of 120 would give a batch of 16 an abnormal crop now and then."""
    items = items_of(abnormal_classes=2, abnormal_each=1)
    cfg = tiny_config(batch_size=16, steps=20, data={"organs_per_class": 4, "abnormal_share": 0.25})
    sampler = OrganBatchSampler(items, cfg)
    for step in range(20):
        assert sum(bool(items[j].findings) for j in sampler.global_batch(step)) >= 4


def test_counted_structures_are_drawn_less_often():
    items = items_of(n_classes=4, abnormal_classes=0, counted=("rib_left_5", "vertebrae_L2", "rib_right_7", "vertebrae_T9"))
    cfg = tiny_config(batch_size=4, steps=400, data={"organs_per_class": 2, "counted_weight": 0.25})
    sampler = OrganBatchSampler(items, cfg)
    drawn = Counter(items[sampler.global_batch(s)[0]].organ.startswith(("rib", "vertebrae")) for s in range(400))
    # 4 plain classes at weight 1 and 4 counted at 0.25: a counted class leads a batch about 1 time in 5
    assert drawn[True] / 400 < 0.35 and drawn[True] > 0


def test_global_batches_take_organs_per_study_from_each_study():
    items = [OrganItem(s, f"organ{o}", o + 1, "t", ()) for s in range(10) for o in range(6)]
    cfg = tiny_config(batch_size=8, steps=10, model={"kind": "global"}, data={"organs_per_study": 4})
    sampler = OrganBatchSampler(items, cfg)
    for step in range(10):
        batch = sampler.global_batch(step)
        blocks = [batch[i : i + 4] for i in range(0, 8, 4)]
        assert all(len({items[j].study for j in block}) == 1 for block in blocks)
        assert len({items[b[0]].study for b in blocks}) == 2
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        OrganBatchSampler(items[:6], cfg)  # one study, two wanted


def test_a_study_of_the_global_model_is_never_split_between_processes():
    """The global model embeds a study as the mean of its organs: a process holding half of a study's organs would
    embed another study than one process does. A world size that cuts a study in two must be refused."""
    items = [OrganItem(s, f"organ{o}", o + 1, "t", ()) for s in range(10) for o in range(6)]
    cfg = tiny_config(batch_size=8, steps=2, model={"kind": "global"}, data={"organs_per_study": 4})
    with pytest.raises(ValueError):
        OrganBatchSampler(items, cfg, rank=0, world_size=4)  # 2 organs a process: every study cut in two
