"""Model pieces with tiny tensors: the config, the encoders on organ crops, organ pooling, the losses."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.config import TrainConfig, benchmark, demo, describe, paper, replace
from model.fake_data import tiny_config
from model.losses import CTGlipLoss, balanced_bce, dictionary_logits, positive_mask, soft_contrastive, total_loss
from model.network import CTGlip, pool_map, region_weights

PRE = tiny_config().data.preprocessing  # the 16-voxel crops the tiny network takes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- config ------------------------------------------------------------------------------------


def test_config_roundtrip_presets_and_descriptions():
    for cfg in (demo(), benchmark(), paper(), tiny_config()):
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.demo() == demo() and TrainConfig.paper() == paper()
    assert paper().model.text_encoder != demo().model.text_encoder
    partial = TrainConfig.from_dict({"steps": 7, "model": {"kind": "global"}}, base=demo())
    assert partial.steps == 7 and partial.model.kind == "global" and partial.model.embed_dim == demo().model.embed_dim
    assert all(help_ for _, _, help_ in describe(TrainConfig)), "every field has a description"
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"no_such_field": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo().steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("change, match", [
    ({"model": {"cnn_strides": (2, 4)}, "data": {"preprocessing": {"crop_voxels": 12}}}, "multiple of the total CNN "),
    ({"model": {"image_encoder": "vit", "vit_patch_size": 6}}, "multiple of vit_patch_size"),
    ({"model": {"cnn_output_stride": 8}}, "not a stage stride"),
    ({"model": {"text_trainable_layers": -1}}, "0 or more"),
    ({"model": {"kind": "study"}}, "kind must be"),
    ({"batch_size": 7}, "multiple of the grounded batch's group of 2"),
    ({"batch_size": 6, "model": {"kind": "global"}, "data": {"organs_per_study": 4}}, "global batch's group of 4"),
    ({"data": {"preprocessing": {"hu_window": (-100.0, 100.0)}}}, "inside the input window"),
])
def test_config_refuses_what_the_network_cannot_take(change, match):
    with pytest.raises(ValueError, match=match):
        replace(tiny_config(), **change)


# --- the network -------------------------------------------------------------------------------


def crops(n: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """n organ crops: random intensities, a box organ, its region a voxel larger, a size vector."""
    g = torch.Generator().manual_seed(seed)
    volume = torch.rand(n, 1, size, size, size, generator=g) * 2 - 1
    mask = torch.zeros(n, size, size, size)
    mask[:, 4:12, 5:11, 3:13] = 1.0
    region = torch.zeros_like(mask)
    region[:, 3:13, 4:12, 2:14] = 1.0
    return {"volume": volume, "mask": mask, "region": region, "size": torch.randn(n, 4, generator=g)}


@pytest.mark.parametrize("encoder, expected", [("cnn", (3, 16, 8, 8, 8)), ("vit", (3, 32, 4, 4, 4))])
def test_feature_map_and_embeddings_of_organ_crops(encoder, expected):
    torch.manual_seed(0)
    model = CTGlip(replace(tiny_config().model, image_encoder=encoder), PRE).eval()
    x = crops(3, 16)
    fmap = model.feature_map(x["volume"], x["mask"])
    assert tuple(fmap.shape) == expected
    emb = model.encode_organs(**x)
    assert emb.shape == (3, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    torch.testing.assert_close(model.encode_organs(**x, fmap=fmap), emb)  # a precomputed map gives the same
    txt = model.encode_text(["The liver is unremarkable.", "Cyst of the liver."])
    assert txt.shape == (2, 32) and torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert float(model.encode_text(["a"], normalize=False).detach().norm()) != pytest.approx(1.0)
    assert math.isclose(float(model.logit_scale.detach()), math.log(1 / 0.07), rel_tol=1e-6)


def test_the_mask_channel_tells_the_encoder_which_organ_is_asked():
    torch.manual_seed(0)
    x = crops(1, 16)
    other = dict(x, mask=torch.roll(x["mask"], 3, dims=1))
    with_mask = CTGlip(tiny_config().model, PRE).eval()
    assert with_mask.input_channels(x["volume"], x["mask"]).shape[1] == 3  # HU, soft-tissue window, mask
    assert not torch.allclose(with_mask.encode_organs(**x), with_mask.encode_organs(**other))
    without = CTGlip(replace(tiny_config().model, mask_channel=False), PRE).eval()
    assert without.input_channels(x["volume"], x["mask"]).shape[1] == 2
    torch.testing.assert_close(without.encode_organs(**x), without.encode_organs(**other))  # only region and size pool


def test_pooling_is_masked_mean_and_max_over_the_cells_the_region_touches():
    g = torch.Generator().manual_seed(1)
    fmap = torch.randn(2, 3, 4, 4, 4, generator=g)
    region = torch.zeros(2, 8, 8, 8)
    region[0, :4, :4, :4] = 1.0  # exactly the cells [0:2, 0:2, 0:2]
    region[1, 0, 0, 0] = 1.0  # one voxel: an eighth of cell (0, 0, 0)
    w = region_weights(region, (4, 4, 4))
    assert float(w[0, :2, :2, :2].min()) == 1.0 and float(w[0].sum()) == 8.0
    assert float(w[1, 0, 0, 0]) == pytest.approx(1 / 8) and float(w[1].sum()) == pytest.approx(1 / 8)
    f = fmap.numpy()
    want_mean0 = f[0, :, :2, :2, :2].reshape(3, -1).mean(1)
    want_max0 = f[0, :, :2, :2, :2].reshape(3, -1).max(1)
    mean_max = pool_map(fmap, w, "mean_max_size").numpy()
    np.testing.assert_allclose(mean_max[0], np.r_[want_mean0, want_max0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean_max[1], np.r_[f[1, :, 0, 0, 0], f[1, :, 0, 0, 0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pool_map(fmap, w, "mean").numpy(), mean_max[:, :3], rtol=1e-6)
    empty = pool_map(fmap, torch.zeros(1, 4, 4, 4), "mean_max_size")  # no cell touched: zeros, not -inf
    assert torch.isfinite(empty).all() and float(empty.abs().max()) == 0.0


def test_a_cell_embedding_is_the_organ_embedding_of_a_region_that_is_that_cell():
    """Heatmaps embed each cell as if it were the whole region (mean = max = the cell): a region covering exactly one
    cell of the stride-2 map must give the organ embedding of that cell."""
    torch.manual_seed(0)
    model = CTGlip(tiny_config().model, PRE).eval()
    x = crops(2, 16)
    with torch.no_grad():
        fmap = model.feature_map(x["volume"], x["mask"])  # (2, 8, 8, 8, 8): cells of 2 voxels
        cells = model.cell_embeddings(fmap, x["size"])
        assert cells.shape == (2, 8, 8, 8, 32)
        for n, (i, j, k) in enumerate([(1, 2, 3), (6, 0, 7)]):
            region = torch.zeros(2, 16, 16, 16)
            region[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 2 * k : 2 * k + 2] = 1.0
            organ = model.encode_organs(x["volume"], x["mask"], region, x["size"], fmap=fmap)
            torch.testing.assert_close(cells[:, i, j, k], organ, atol=1e-5, rtol=0)
    mean_only = CTGlip(replace(tiny_config().model, organ_pooling="mean"), PRE).eval()
    with torch.no_grad():
        fmap = mean_only.feature_map(x["volume"], x["mask"])
        region = torch.zeros(2, 16, 16, 16)
        region[:, :2, :2, :2] = 1.0
        torch.testing.assert_close(mean_only.cell_embeddings(fmap, x["size"])[:, 0, 0, 0],
                                   mean_only.encode_organs(x["volume"], x["mask"], region, x["size"], fmap=fmap), atol=1e-5, rtol=0)


def test_the_organ_size_reaches_the_embedding_where_the_pooling_keeps_it():
    torch.manual_seed(0)
    x = crops(1, 16)
    bigger = dict(x, size=x["size"] + 1.0)
    sized = CTGlip(tiny_config().model, PRE).eval()
    assert not torch.allclose(sized.encode_organs(**x), sized.encode_organs(**bigger))
    mean = CTGlip(replace(tiny_config().model, organ_pooling="mean"), PRE).eval()
    torch.testing.assert_close(mean.encode_organs(**x), mean.encode_organs(**bigger))


def test_study_embedding_is_the_normalised_mean_of_its_organs():
    organs = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    index = torch.tensor([0, 1, 0, 1, 1])
    got = CTGlip.study_embeddings(organs, index, 2)
    torch.testing.assert_close(got[0], F.normalize(organs[[0, 2]].mean(0), dim=0))
    torch.testing.assert_close(got[1], F.normalize(organs[[1, 3, 4]].mean(0), dim=0))


def test_logit_scale_is_clamped_at_its_maximum():
    model = CTGlip(tiny_config().model, PRE)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert float(model.scale().detach()) == pytest.approx(100.0)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
    assert float(model.scale().detach()) == pytest.approx(20.0)


# --- losses ------------------------------------------------------------------------------------


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def organ_terms(img, txt, names, labels, findings, fn_aware: bool = True, scale: float = 10.0) -> dict[str, torch.Tensor]:
    return CTGlipLoss(false_negative_aware=fn_aware)(
        logit_scale=torch.tensor(scale), organ_features=img, organ_text_features=txt, organ_labels=labels,
        organ_findings=findings, name_features=names)


def test_organ_loss_contrasts_only_within_a_class():
    """Each row competes with its own class only: the loss of a batch is the row-weighted mean of its classes' losses,
    whatever the other classes' embeddings (a class-blind InfoNCE would not decompose)."""
    img, txt, names = unit(7, 16, seed=1), unit(7, 16, seed=2), unit(7, 16, seed=3)
    labels = torch.tensor([5, 5, 5, 1, 1, 3, 3])
    findings = torch.tensor([0, 7, 0, 0, 9, 0, 0])
    whole = organ_terms(img, txt, names, labels, findings)["organ_loss"]
    parts = sum((labels == c).sum() / 7 * organ_terms(img[labels == c], txt[labels == c], names[labels == c],
                                                      labels[labels == c], findings[labels == c])["organ_loss"]
                for c in labels.unique())
    torch.testing.assert_close(whole, parts)
    moved = txt.clone()
    moved[3:] = img[0]  # other classes' texts as close as can be to organ 0's image: no effect on organ 0's class
    torch.testing.assert_close(organ_terms(img[:3], moved[:3], names[:3], labels[:3], findings[:3])["organ_loss"],
                               organ_terms(img[:3], txt[:3], names[:3], labels[:3], findings[:3])["organ_loss"])
    assert not torch.allclose(soft_contrastive(img, moved, torch.tensor(10.0), torch.eye(7, dtype=torch.bool)),
                              soft_contrastive(img, txt, torch.tensor(10.0), torch.eye(7, dtype=torch.bool)))


def test_texts_of_the_same_abnormality_set_are_positives_whatever_their_words():
    """Rows 0 and 1: one class, one abnormality set ('3 cm cyst' and 'small cyst'): swapping their texts changes
    nothing when they are positives of each other, and changes the loss of plain InfoNCE."""
    img, txt, names = unit(4, 16, seed=4), unit(4, 16, seed=5), unit(4, 16, seed=6)
    labels = torch.tensor([2, 2, 2, 3])
    findings = torch.tensor([11, 11, 0, 0])
    swapped = txt[[1, 0, 2, 3]]
    aware = [organ_terms(img, t, names, labels, findings)["organ_loss"] for t in (txt, swapped)]
    plain = [organ_terms(img, t, names, labels, findings, fn_aware=False)["organ_loss"] for t in (txt, swapped)]
    torch.testing.assert_close(aware[0], aware[1])
    assert not torch.isclose(plain[0], plain[1])
    # the positive mask itself: same id, nothing else
    assert positive_mask(findings).tolist() == [[True, True, False, False], [True, True, False, False],
                                                [False, False, True, True], [False, False, True, True]]


def test_identity_loss_is_organ_vs_class_name_across_classes_computed_by_hand():
    img, names = unit(3, 8, seed=7), unit(3, 8, seed=8)
    labels = torch.tensor([1, 2, 2])  # rows 1 and 2 share their class: both names are right for both
    scale = 5.0
    got = float(organ_terms(img, img, names, labels, torch.zeros(3, dtype=torch.long), scale=scale)["identity_loss"])
    logits = scale * img.numpy() @ names.numpy().T
    pos = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1]], float)

    def soft_ce(lg: np.ndarray, p: np.ndarray) -> float:
        logp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
        return float(-(p / p.sum(1, keepdims=True) * logp).sum(1).mean())

    want = 0.25 * (soft_ce(logits, pos) + soft_ce(logits.T, pos.T)) / 2  # identity_weight 0.25 by default
    assert got == pytest.approx(want, rel=1e-5)


def test_losses_are_lower_for_aligned_than_shuffled_features_and_their_gradients_finite():
    txt = unit(12, 16, seed=9)
    img = F.normalize(txt + 0.1 * unit(12, 16, seed=10), dim=-1).requires_grad_(True)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
    findings = torch.arange(12)
    aligned = organ_terms(img, txt, txt, labels, findings)
    shuffled = organ_terms(img[perm], txt, txt, labels, findings)
    assert aligned["organ_loss"] < shuffled["organ_loss"] and aligned["identity_loss"] < shuffled["identity_loss"]
    total_loss(aligned).backward()
    assert torch.isfinite(img.grad).all()  # masked -inf logits leave no NaN behind
    scale = torch.tensor(10.0)
    ids = torch.arange(12)
    assert soft_contrastive(img, txt, scale, positive_mask(ids)) < soft_contrastive(img[perm], txt, scale, positive_mask(ids)) - 1.0
    glob = CTGlipLoss()(scale, image_features=img, text_features=txt, text_ids=ids)["global_loss"]
    torch.testing.assert_close(glob, soft_contrastive(img, txt, scale, positive_mask(ids)))
    assert "global_loss" not in CTGlipLoss(global_weight=0.0)(scale, image_features=img, text_features=txt, text_ids=ids)


def test_dictionary_logit_is_the_affirmed_against_negated_softmax():
    e, aff, neg = unit(4, 8, seed=11), unit(4, 8, seed=12), unit(4, 8, seed=13)
    scale = torch.tensor(7.0)
    logit = dictionary_logits(e, aff, neg, scale)
    two_way = torch.softmax(scale * torch.stack([(e * aff).sum(1), (e * neg).sum(1)], 1), 1)[:, 0]
    torch.testing.assert_close(torch.sigmoid(logit), two_way)


def test_balanced_dictionary_loss_floor_is_ln2_for_an_image_blind_predictor_whatever_the_prevalence():
    """Three tasks of prevalence 0.1, 0.5 and 0.8 weighted by model.data.Dictionary: the best constant per task (a
    predictor that never looks at the image) scores exactly ln 2, while unweighted BCE would reward learning the
    prevalence (its floor, the binary entropy, lies below ln 2); a predictor that reads the label scores below."""
    from model.data import Dictionary, OrganItem

    items = []
    for organ, abn, n, n_pos in (("liver", "cyst", 20, 2), ("spleen", "splenomegaly", 10, 5), ("aorta", "aneurysm", 10, 8)):
        items += [OrganItem(k, organ, 0, "t", (abn,) if k < n_pos else ()) for k in range(n)]
    dictionary = Dictionary.of(items)
    assert dictionary.prevalence == {("liver", "cyst"): 0.1, ("spleen", "splenomegaly"): 0.5, ("aorta", "aneurysm"): 0.8}
    rows = [row for it in items for row in dictionary.rows(it, [0])]  # one abnormality per class: a row per organ
    assert len(rows) == len(items)
    task = torch.tensor([["liver", "spleen", "aorta"].index(it.organ) for it in items])
    labels = torch.tensor([r[2] for r in rows])
    weights = torch.tensor([r[3] for r in rows])
    for t in range(3):  # each task's classes carry equal total weight
        sel = task == t
        assert float(weights[sel & (labels == 1)].sum()) == pytest.approx(float(weights[sel & (labels == 0)].sum()))
    assert float(balanced_bce(torch.zeros(len(labels)), labels, weights)) == pytest.approx(math.log(2), abs=1e-6)
    constant = torch.zeros(3, requires_grad=True)  # the best image-blind predictor: one logit per task
    opt = torch.optim.Adam([constant], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        loss = balanced_bce(constant[task], labels, weights)
        loss.backward()
        opt.step()
    loss = float(loss.detach())
    assert loss == pytest.approx(math.log(2), abs=1e-4) and loss >= math.log(2) - 1e-6
    prevalence_logit = torch.logit(torch.tensor([0.1, 0.5, 0.8]))[task]  # what an unweighted BCE learns
    unbalanced = balanced_bce(prevalence_logit, labels, torch.ones(len(labels)))
    assert float(unbalanced) < math.log(2) - 0.05
    seeing = balanced_bce(torch.where(labels > 0, 2.0, -2.0), labels, weights)
    assert float(seeing) < math.log(2) - 0.5


def test_dictionary_term_of_the_loss_is_lower_for_aligned_features():
    aff, neg = unit(8, 16, seed=14), unit(8, 16, seed=15)
    labels = torch.tensor([1.0, 0, 1, 0, 0, 1, 0, 0])
    feats = F.normalize(torch.where(labels[:, None] > 0, aff, neg), dim=-1)
    weights = torch.ones(8)

    def term(f: torch.Tensor) -> float:
        return float(CTGlipLoss()(torch.tensor(10.0), dictionary_features=f, affirmed_features=aff, negated_features=neg,
                                  dictionary_labels=labels, dictionary_weights=weights)["abnormality_loss"])

    assert term(feats) < math.log(2) < term(torch.where(labels[:, None] > 0, neg, aff))


def test_model_package_does_not_import_dagster():
    import model

    for path in Path(model.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "import dagster" not in text and "from dagster" not in text, path
