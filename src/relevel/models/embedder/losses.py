"""The graded bi-encoder loss of SSRA. sentence-transformers has none (its issue #3492 is open), so it is a
small module in the library's loss style: `forward(sentence_features, labels)` on the model's embeddings."""

from __future__ import annotations

import torch
from sentence_transformers.util import cos_sim
from torch import nn


class GradedInfoNCELoss(nn.Module):
    """InfoNCE over in-batch and hard negatives where each (anchor, positive) term is weighted by the pair's
    level (`labels`, e.g. level / top level): a perfect match pulls harder than a partial one, while every
    other document of the batch, and the mined negatives, push away. Level-0 pairs never come here as
    positives; they serve as negatives."""

    def __init__(self, model, scale: float = 20.0):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """embeddings: [anchors (n, d), positives (n, d), negatives (n, d)...]; labels: (n,) level weights."""
        anchors, candidates = embeddings[0], torch.cat(embeddings[1:])
        scores = cos_sim(anchors, candidates) * self.scale
        targets = torch.arange(len(anchors), device=scores.device)  # row i's positive is candidate i
        per_pair = nn.functional.cross_entropy(scores, targets, reduction="none")
        weights = labels.to(per_pair.dtype)
        return (weights * per_pair).sum() / weights.sum().clamp_min(1e-8)

    def get_config_dict(self) -> dict:
        return {"scale": self.scale}
