"""Contrastive losses of CT-GLIP and the global baseline, with negatives gathered across processes.

Every process computes the loss over the features of the whole global batch (open_clip's
``gather_with_grad=True, local_loss=False``). ``gather`` passes gradients back to the process that
owns each row, summed over processes; DDP then averages, so the gradient equals the gradient of the
single-process loss on the same global batch.

``CTGlipLoss`` returns a dict of named, weighted terms; training sums every ``*_loss`` key.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_padded(x: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """all_gather of tensors whose first dimension differs between processes."""
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return [p[:c] for p, c in zip(parts, counts)], counts


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts, counts = _all_gather_padded(x)
        ctx.counts, ctx.rank = counts, dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every process's loss depends on every row
        lo = sum(ctx.counts[: ctx.rank])
        return grad[lo : lo + ctx.counts[ctx.rank]]


def gather(x: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Rows of every process, concatenated in rank order (identity in a single process)."""
    if not _distributed():
        return x
    if with_grad and x.requires_grad:
        return _GatherWithGrad.apply(x)
    parts, _ = _all_gather_padded(x.detach().to(torch.uint8) if x.dtype == torch.bool else x.detach())
    return torch.cat(parts).to(x.dtype)


def positive_mask(text_ids: torch.Tensor, labels: torch.Tensor | None = None, normal: torch.Tensor | None = None) -> torch.Tensor:
    """(n, n) bool: pairs that must not be pushed apart -- identical texts, or two normal texts of one organ."""
    pos = text_ids[:, None] == text_ids[None, :]
    if labels is not None and normal is not None:
        pos = pos | ((labels[:, None] == labels[None, :]) & normal[:, None] & normal[None, :])
    return pos


def soft_contrastive(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: each row's probability mass spread over its positives."""
    logits = logit_scale * image @ text.T  # (n, n)
    pos = positives.float()
    t_img = pos / pos.sum(1, keepdim=True)  # image -> texts
    t_txt = pos.T / pos.T.sum(1, keepdim=True)  # text -> images
    loss_i = -(t_img * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(t_txt * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def dictionary_loss(
    features: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, negative_mask: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Per-row cross-entropy of the positive text against its dictionary negatives: (m,) losses."""
    candidates = torch.cat([positive[:, None], negatives], dim=1)  # (m, 1 + k, e)
    logits = logit_scale * torch.einsum("me,mke->mk", features, candidates)  # (m, 1 + k)
    valid = torch.cat([torch.ones_like(negative_mask[:, :1]), negative_mask], dim=1)
    logits = logits.masked_fill(~valid, float("-inf"))
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction="none")


class CTGlipLoss(nn.Module):
    def __init__(
        self,
        organ_weight: float = 1.0,
        abnormality_weight: float = 1.0,
        global_weight: float = 1.0,
        false_negative_aware: bool = True,
    ):
        super().__init__()
        self.organ_weight, self.abnormality_weight, self.global_weight = organ_weight, abnormality_weight, global_weight
        self.false_negative_aware = false_negative_aware

    def _positives(self, ids: torch.Tensor, labels: torch.Tensor | None = None, normal: torch.Tensor | None = None) -> torch.Tensor:
        if not self.false_negative_aware:
            return torch.eye(len(ids), dtype=torch.bool, device=ids.device)
        return positive_mask(ids, labels, normal)

    def forward(
        self,
        logit_scale: torch.Tensor,
        organ_features: torch.Tensor | None = None,  # (n, e)
        organ_text_features: torch.Tensor | None = None,  # (n, e)
        organ_text_ids: torch.Tensor | None = None,  # (n,)
        organ_labels: torch.Tensor | None = None,  # (n,)
        organ_normal: torch.Tensor | None = None,  # (n,)
        abnormality_features: torch.Tensor | None = None,  # (m, e)
        positive_text_features: torch.Tensor | None = None,  # (m, e)
        negative_text_features: torch.Tensor | None = None,  # (m, k, e)
        negative_mask: torch.Tensor | None = None,  # (m, k)
        image_features: torch.Tensor | None = None,  # (b, e)
        text_features: torch.Tensor | None = None,  # (b, e)
        text_ids: torch.Tensor | None = None,  # (b,)
    ) -> dict[str, torch.Tensor]:
        zero = logit_scale * 0.0
        out: dict[str, torch.Tensor] = {}
        if organ_features is not None:
            img, txt = gather(organ_features), gather(organ_text_features)
            ids, labels, normal = (gather(t, with_grad=False) for t in (organ_text_ids, organ_labels, organ_normal))
            organ = soft_contrastive(img, txt, logit_scale, self._positives(ids, labels, normal)) if len(img) else zero
            out["organ_loss"] = self.organ_weight * organ
        if abnormality_features is not None:
            per_row = gather(
                dictionary_loss(abnormality_features, positive_text_features, negative_text_features, negative_mask, logit_scale)
            )
            out["abnormality_loss"] = self.abnormality_weight * (per_row.mean() if len(per_row) else zero)
        if image_features is not None and self.global_weight:
            img, txt, ids = gather(image_features), gather(text_features), gather(text_ids, with_grad=False)
            out["global_loss"] = self.global_weight * soft_contrastive(img, txt, logit_scale, self._positives(ids))
        return out


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(v for k, v in losses.items() if k.endswith("_loss"))  # type: ignore[return-value]
