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
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts, counts = _all_gather_padded(x)
        ctx.counts, ctx.rank = counts, dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
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


def positive_mask(ids: torch.Tensor) -> torch.Tensor:
    """(n, n) bool: pairs that must not be pushed apart -- rows with the same id (the same text, the same organ class,
    or the same abnormality set)."""
    return ids[:, None] == ids[None, :]


def soft_contrastive(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: each row's probability mass spread over its positives. ``allowed`` (n, n)
    limits which pairs compete at all (the organ loss: the same organ class); positives must be allowed."""
    logits = logit_scale * image @ text.T  # (n, n)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    pos = positives.float()
    t_img = pos / pos.sum(1, keepdim=True)  # image -> texts
    t_txt = pos.T / pos.T.sum(1, keepdim=True)  # text -> images
    # where a pair is not allowed its target is 0: 0 * -inf is nan, so those terms are dropped
    loss_i = -torch.where(pos > 0, t_img * F.log_softmax(logits, dim=1), 0.0).sum(1).mean()
    loss_t = -torch.where(pos.T > 0, t_txt * F.log_softmax(logits.T, dim=1), 0.0).sum(1).mean()
    return (loss_i + loss_t) / 2


def dictionary_logits(
    features: torch.Tensor, affirmed: torch.Tensor, negated: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """(r,) logit that each organ has its row's abnormality: the two-way softmax of the affirmed against the negated
    phrase (the zero-shot score's form), at the model's logit scale."""
    return logit_scale * ((features * affirmed).sum(-1) - (features * negated).sum(-1))


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy, normalised by the weights: with weights that balance each task's classes,
    a predictor that never looks at the image scores ln 2 at best (the image-free floor)."""
    per_row = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)


class CTGlipLoss(nn.Module):
    """Named, weighted terms:

    - ``organ_loss``: organ embedding vs its report text, contrasted only with organs of the same class (the class is
      the identity term's job); texts of the same abnormality set are positives whatever size or words they use;
    - ``identity_loss``: organ embedding vs its class's name, across classes (organ recognition);
    - ``abnormality_loss``: per organ and each abnormality of its class's dictionary, affirmed vs negated phrase,
      multi-label, each (organ, abnormality) task class-balanced (no catch-all "normal" row);
    - ``global_loss``: a study's embedding vs its whole report (the CLIP baseline).
    """

    def __init__(
        self,
        organ_weight: float = 1.0,
        identity_weight: float = 0.25,
        abnormality_weight: float = 1.0,
        global_weight: float = 1.0,
        false_negative_aware: bool = True,
    ):
        super().__init__()
        self.organ_weight, self.identity_weight = organ_weight, identity_weight
        self.abnormality_weight, self.global_weight = abnormality_weight, global_weight
        self.false_negative_aware = false_negative_aware

    def forward(
        self,
        logit_scale: torch.Tensor,
        organ_features: torch.Tensor | None = None,  # (n, e)
        organ_text_features: torch.Tensor | None = None,  # (n, e)
        organ_labels: torch.Tensor | None = None,  # (n,)
        organ_findings: torch.Tensor | None = None,  # (n,)
        name_features: torch.Tensor | None = None,  # (n, e)
        dictionary_features: torch.Tensor | None = None,  # (r, e)
        affirmed_features: torch.Tensor | None = None,  # (r, e)
        negated_features: torch.Tensor | None = None,  # (r, e)
        dictionary_labels: torch.Tensor | None = None,  # (r,)
        dictionary_weights: torch.Tensor | None = None,  # (r,)
        image_features: torch.Tensor | None = None,  # (s, e)
        text_features: torch.Tensor | None = None,  # (s, e)
        text_ids: torch.Tensor | None = None,  # (s,)
    ) -> dict[str, torch.Tensor]:
        zero = logit_scale * 0.0
        out: dict[str, torch.Tensor] = {}
        if organ_features is not None:
            if organ_text_features is None or name_features is None or organ_labels is None or organ_findings is None:
                raise ValueError(
                    "organ_features come with organ_text_features, name_features, organ_labels and findings"
                )
            img, txt, names = gather(organ_features), gather(organ_text_features), gather(name_features)
            labels, findings = (gather(t, with_grad=False) for t in (organ_labels, organ_findings))
            same_class = positive_mask(labels)
            if len(img):
                both = (
                    same_class & positive_mask(findings)
                    if self.false_negative_aware
                    else torch.eye(len(img), dtype=torch.bool, device=img.device)
                )
                out["organ_loss"] = self.organ_weight * soft_contrastive(img, txt, logit_scale, both, same_class)
                out["identity_loss"] = self.identity_weight * soft_contrastive(img, names, logit_scale, same_class)
            else:
                out["organ_loss"] = out["identity_loss"] = zero
        if dictionary_features is not None:
            if affirmed_features is None or negated_features is None or dictionary_labels is None:
                raise ValueError("dictionary_features come with affirmed_features, negated_features and their labels")
            if dictionary_weights is None:
                raise ValueError("dictionary_features come with dictionary_weights")
            logits = gather(dictionary_logits(dictionary_features, affirmed_features, negated_features, logit_scale))
            labels, weights = gather(dictionary_labels, with_grad=False), gather(dictionary_weights, with_grad=False)
            out["abnormality_loss"] = self.abnormality_weight * (
                balanced_bce(logits, labels, weights) if len(logits) else zero
            )
        if image_features is not None and self.global_weight:
            if text_features is None or text_ids is None:
                raise ValueError("image_features come with text_features and text_ids")
            img, txt, ids = gather(image_features), gather(text_features), gather(text_ids, with_grad=False)
            pos = (
                positive_mask(ids)
                if self.false_negative_aware
                else torch.eye(len(img), dtype=torch.bool, device=img.device)
            )
            out["global_loss"] = self.global_weight * soft_contrastive(img, txt, logit_scale, pos)
        return out


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    # sum() starts from the int 0, which it returns only when no term is given
    return sum(v for k, v in losses.items() if k.endswith("_loss"))  # type: ignore[return-value]
