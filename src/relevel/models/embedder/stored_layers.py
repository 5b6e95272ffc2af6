"""Training only the embedder's top layers on stored lower-layer states. When the lower layers are frozen,
their output for a text never changes, so it is computed once (and kept in the run's encoder store, shared
by every variant and seed) instead of at every step: a step then runs only the top layers, forward and
backward. sentence-transformers has no such mode, hence this input module."""

from __future__ import annotations

import numpy as np
import torch
from sentence_transformers.base.modules.input_module import InputModule
from torch.nn.utils.rnn import pad_sequence
from transformers.masking_utils import create_bidirectional_mask

from relevel.models.encoder import FrozenEncoder


class StoredLowerLayers(InputModule):
    """Stands in for the Transformer module during training: looks up each text's states after the frozen
    layers (prompt included, [CLS]/[SEP] kept) and runs the top `trainable` layers on them. The layers are
    the embedder's own modules, so training this stand-in trains the embedder, which is what gets saved."""

    def __init__(self, lower: FrozenEncoder, bert, trainable: int):
        super().__init__()
        self.texts = list(lower.cache)
        self.states = [lower.cache[text][1] for text in self.texts]
        self.row = {text: i for i, text in enumerate(self.texts)}
        self.config, self.layers = bert.config, bert.encoder.layer[-trainable:]

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        # "input_ids" is the suffix the trainer collects features by; here each is a row of the store
        return {"input_ids": torch.tensor([self.row[(prompt or "") + text] for text in inputs])}

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        states = [torch.from_numpy(self.states[i].astype(np.float32)) for i in features["input_ids"].tolist()]
        hidden = pad_sequence(states, batch_first=True)
        attention_mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in states], batch_first=True)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask)
        return {**features, "token_embeddings": hidden, "attention_mask": attention_mask}

    def save(self, output_path: str, *args, **kwargs) -> None:
        raise TypeError("StoredLowerLayers is a training stand-in; save the embedder whose layers it trains")


def stored_layers_model(model, lower: FrozenEncoder, trainable: int):
    """A SentenceTransformer that shares `model`'s top layers, pooling and prompts, fed by `lower`'s states."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[StoredLowerLayers(lower, model[0].auto_model, trainable), *list(model)[1:]],
                               device="cpu", prompts=model.prompts)
