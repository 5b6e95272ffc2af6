"""Embedder settings (pydantic only, so a config validates without importing torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relevel.models.base_model import OFFLINE_BASE

Loss = Literal["graded-infonce", "infonce", "cosent", "graded-infonce+cosent"]


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = Field(OFFLINE_BASE, description="Encoder to fine-tune (offline e5-small, a hub name or "
                            "a local folder).")
    query_prompt: str = Field("query: ", description="Stored as the model's `query` prompt (e5's).")
    document_prompt: str = Field("passage: ", description="Stored as the model's `document` prompt (e5's).")
    max_seq_length: int = Field(128, gt=8, description="Tokens per text, prompt included; longer texts are cut "
                                "(the run's data summary counts them).")
    loss: Loss = Field("graded-infonce+cosent", description="'graded-infonce': InfoNCE over in-batch and "
                       "hard negatives, each positive weighted by its level (SSRA); 'infonce': the same, "
                       "unweighted; 'cosent': the level as a similarity target; '+cosent': both, each batch one "
                       "loss's, in proportion to their examples (ranking from InfoNCE, score calibration from "
                       "CoSENT).")
    matryoshka_dims: tuple[int, ...] | None = Field((384, 256, 128, 64), description="Train truncated "
                                                    "vectors too (null: full size only).")
    hard_negatives: int = Field(1, ge=0, description="Mined hard negatives per positive (InfoNCE losses).")
    hard_negative_margin: float = Field(0.05, ge=0, lt=1, description="Skip candidates scoring above "
                                        "(1 − margin) × the positive's score: likely unlabelled positives.")
    trainable_layers: int | None = Field(None, gt=0, description="Train only the top N layers (CPU budget); "
                                         "null trains all.")
    steps: int | None = Field(None, gt=0, description="Optimiser steps (the same for every variant of an "
                              "experiment); null: `epochs` over the data.")
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(32, gt=1)
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    infonce_scale: float = Field(20.0, gt=0, description="Inverse temperature of the InfoNCE losses.")
    base_share: float = Field(0.0, ge=0, lt=1, description="After training, this share of the base model's "
                              "weights is mixed back into the trained ones (WiSE-FT): the base's retrieval "
                              "ranking comes back faster than the fine-tune's score calibration goes. 0: the "
                              "trained weights as they are.")
    seed: int = 0

    def for_evaluation(self) -> EmbedderConfig:
        """Only what evaluation reads (base, prompts, length, dims), the rest at defaults: an evaluation step
        keyed on it is not redone when a training setting such as the learning rate changes."""
        return EmbedderConfig(**self.model_dump(include={"base_model", "query_prompt", "document_prompt",
                                                         "max_seq_length", "matryoshka_dims"}))
