"""Models that compute the same frozen backbone prefix, found so that several models can embed one image set
with the prefix run once per image.

A fine-tuned model and the off-the-shelf model it started from (or several models trained with one `train_from`)
share everything before `train_from`: training never changes the frozen prefix (no gradients, BatchNorm in
eval mode). `frozen_prefix_digest` names what that prefix computes (the preprocessing, the modules and every
tensor they hold), so equal digests mean equal feature maps for equal pixels, to the bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["frozen_prefix_digest", "group_by_frozen_prefix"]


def frozen_prefix_digest(model) -> str | None:
    """sha256 (hex, first 16 chars) of an `EmbeddingModel`'s frozen prefix: its preprocessing, the type,
    mode (train/eval) and printed form of every module in it, and every parameter and buffer (persistent or
    not); None when the model has no frozen layers. Equal digests mean equal feature maps for equal pixels;
    the prefix runs in eval mode in extraction (`ImageEmbedder` calls `.eval()`)."""
    frozen = model.backbone.frozen
    if not len(list(frozen.children())):
        return None
    digest = hashlib.sha256(repr(model.preprocessor).encode())
    for name, module in frozen.named_modules():
        digest.update(f"{name}:{type(module).__module__}.{type(module).__qualname__}:{module.training}:"
                      f"{module.extra_repr()}".encode())
    for name, tensor in [*frozen.named_parameters(), *frozen.named_buffers()]:
        digest.update(name.encode())
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def group_by_frozen_prefix(models: Sequence) -> list[list[int]]:
    """Indices of `models` grouped by equal frozen prefix, in first-seen order; a model without frozen
    layers is a group of its own. E.g. [off-the-shelf, trained, other backbone] -> [[0, 1], [2]]."""
    groups: dict[str, list[int]] = {}
    order: list[list[int]] = []
    for i, model in enumerate(models):
        key = frozen_prefix_digest(model)
        if key is not None and key in groups:
            groups[key].append(i)
            continue
        order.append([i])
        if key is not None:
            groups[key] = order[-1]
    return order
