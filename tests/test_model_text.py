"""The text side (model.text): cached frozen lower layers of the packaged MiniLM, trainable top layers, pooling.

The reference everywhere is the full packaged MiniLM run by transformers itself (``AutoModel``), mean-pooled over the
attention mask: the tower must give that sentence vector whatever its split into frozen and trainable layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.config import GT_MINILM, ModelConfig
from model.preprocess import Preprocessing
from model.text import CachedTextStates, FakeTextBackbone, HFTextBackbone, TextTower, build_text_states, resolve_text_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["The liver is unremarkable.", "Mass is not present in the liver.", "No.",
         "There is a 3 cm cyst in the left kidney with a small stone at its lower pole."]
# float16 holds 11 significant bits: a cached state of magnitude up to ~4 is off by at most 2e-3
F16_ATOL = 2e-3


@pytest.fixture(scope="module")
def minilm():
    """The whole packaged MiniLM, as transformers runs it (the reference)."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_text_model(GT_MINILM)
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def reference(minilm, texts: list[str]) -> torch.Tensor:
    tok, model = minilm
    batch = tok(texts, padding=True, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


@torch.no_grad()
def window_reference(minilm, text: str, max_length: int) -> torch.Tensor:
    """A long text read whole: consecutive windows of max_length tokens (specials included), each run through the full
    model and mean-pooled, then weighted by its tokens (what 'chunk' promises, computed here from the token ids)."""
    tok, model = minilm
    ids = tok(text, truncation=False)["input_ids"]
    cls, inner, sep = ids[:1], ids[1:-1], ids[-1:]
    step = max_length - 2
    vecs, weights = [], []
    for i in range(0, len(inner), step):
        w = torch.tensor([cls + inner[i : i + step] + sep])
        vecs.append(model(input_ids=w, attention_mask=torch.ones_like(w)).last_hidden_state[0].mean(0))
        weights.append(w.shape[1])
    weights_t = torch.tensor(weights, dtype=torch.float32)
    return (torch.stack(vecs) * weights_t[:, None]).sum(0) / weights_t.sum()


@pytest.mark.parametrize("trainable", [0, 1, 2, 6])
def test_the_tower_gives_the_full_minilm_sentence_vector_for_any_split(minilm, trainable):
    tower = TextTower(build_text_states(ModelConfig(text_trainable_layers=trainable)))
    assert len(tower.top) == trainable and tower.states.backbone.frozen == 6 - trainable
    with torch.no_grad():
        got = tower(TEXTS)
    want = reference(minilm, TEXTS)
    assert got.shape == (len(TEXTS), 384)
    torch.testing.assert_close(got, want, atol=F16_ATOL, rtol=0)
    # and the vectors still mean what MiniLM means: a paraphrase is nearer than an unrelated finding
    v = F.normalize(tower(["The liver is unremarkable.", "The liver is normal.", "Fracture of the L1 vertebra."]), dim=-1)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_only_the_top_layers_get_gradients_and_the_frozen_part_stays_out_of_the_state_dict():
    from model.network import CTGlip

    model = CTGlip(ModelConfig(text_trainable_layers=2), Preprocessing())
    tower = model.text
    model.encode_text(TEXTS).sum().backward()
    top = [p for p in tower.top.parameters()]
    assert top and all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0 for p in top)
    frozen = list(tower.states.backbone.model.parameters())
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    keys = list(model.state_dict())
    text_keys = [k for k in keys if k.startswith("text.")]
    assert text_keys and all(k.startswith("text.top.") for k in text_keys)
    assert {k.split(".")[2] for k in text_keys} == {"0", "1"}  # the two trained layers, nothing of the frozen four
    # the trained copies start as MiniLM's own top layers
    layers = tower.states.backbone.model.encoder.layer
    for mine, theirs in zip(tower.top, layers[4:]):
        for (n, p), q in zip(mine.named_parameters(), theirs.parameters()):
            assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="text_trainable_layers must be in"):
        HFTextBackbone(GT_MINILM, trainable=7)


class CountingBackbone(FakeTextBackbone):
    """The hashed bag of words, recording every text that reaches the frozen part."""

    def __init__(self, dim: int = 16, trainable: int = 1):
        super().__init__(dim, trainable)
        self.seen: list[str] = []

    def states(self, texts):
        self.seen += list(texts)
        return super().states(texts)


def test_each_distinct_text_goes_through_the_frozen_part_once_in_memory_and_on_disk(tmp_path):
    backbone = CountingBackbone()
    states = CachedTextStates(backbone, cache_dir=tmp_path)
    tower = TextTower(states)
    a = tower(["x y", "y z", "x y"])
    assert backbone.seen == ["x y", "y z"] and states.n_encoded == 2
    torch.testing.assert_close(a[0], a[2])
    tower(["x y", "new words"])
    assert backbone.seen == ["x y", "y z", "new words"] and states.n_encoded == 3
    files = sorted((tmp_path / backbone.key).rglob("*.npz"))
    assert len(files) == 3 and not list(tmp_path.rglob("*.tmp*"))  # one file per text, written atomically
    # a fresh process (new cache object, same folder): read from disk, the frozen part never runs
    again_backbone = CountingBackbone()
    again = CachedTextStates(again_backbone, cache_dir=tmp_path)
    for h, w in zip(states(["y z"])[0], again(["y z"])[0]):
        assert torch.equal(h, w)
    assert again_backbone.seen == [] and again.n_encoded == 0
    # the trainable top layers still run on every call: the text vector follows their weights
    with torch.no_grad():
        for p in tower.top.parameters():
            p.add_(0.5)
    assert not torch.allclose(tower(["x y"])[0], a[0])


def test_the_cache_keeps_apart_encoders_frozen_at_different_depths(tmp_path):
    """Token states after four frozen layers are not those after five: another namespace on disk."""
    keys = {HFTextBackbone(GT_MINILM, trainable=k).key for k in (1, 2)}
    assert len(keys) == 2


def test_long_texts_are_read_whole_in_windows_not_cut(minilm):
    """Two reports that differ only after the first window: chunking tells them apart, truncation cannot; the chunked
    vector is the token-weighted mean of the windows' own MiniLM vectors."""
    start = " ".join(["The liver is normal in size and attenuation without a focal lesion."] * 3)
    texts = [start + " The spleen is enlarged.", start + " The kidneys are unremarkable."]
    chunk_cfg = ModelConfig(text_max_length=24, text_trainable_layers=1)
    chunk = TextTower(build_text_states(chunk_cfg))
    cut = TextTower(build_text_states(ModelConfig(text_max_length=24, text_trainable_layers=1, long_text="truncate")))
    assert all(n > 24 for n in chunk.states.backbone.token_counts(texts))
    with torch.no_grad():
        a, b = chunk(texts), cut(texts)
    assert not torch.allclose(a[0], a[1], atol=1e-3) and torch.allclose(b[0], b[1], atol=1e-5)
    for text, got in zip(texts, a):
        torch.testing.assert_close(got, window_reference(minilm, text, 24), atol=F16_ATOL, rtol=0)
    assert chunk.states.backbone.n_long == cut.states.backbone.n_long == 2
    assert chunk.states.backbone.n_tokens_cut == 0 < cut.states.backbone.n_tokens_cut
    with torch.no_grad():  # a text that fits: the same either way
        torch.testing.assert_close(chunk(["The liver is normal."]), cut(["The liver is normal."]), atol=1e-6, rtol=0)


def test_length_sorted_batches_give_each_text_its_own_states():
    """Texts of mixed lengths (one chunked) in small length-sorted batches: every text's states equal that text read
    alone, in input order."""
    texts = ["Mass is present in the liver.", " ".join(["The liver is normal in size and attenuation."] * 4),
             "No.", "There is no evidence of a stone in the left kidney.", "The spleen is enlarged."]
    backbone = HFTextBackbone(GT_MINILM, max_length=24, batch_tokens=40, trainable=1)  # two or three windows a batch
    together = backbone.states(texts)
    inner = 24 - 2  # tokens of a window besides [CLS] and [SEP]
    assert [len(w) for w in together] == [-(-(n - 2) // inner) for n in backbone.token_counts(texts)]
    assert max(len(w) for w in together) > 1
    for text, windows in zip(texts, together):
        (alone,) = backbone.states([text])
        for x, y in zip(windows, alone):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    assert backbone.states([]) == []
    assert TextTower(CachedTextStates(backbone))([]).shape == (0, 384)
