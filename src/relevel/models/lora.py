"""LoRA settings for the causal-LM backends (pydantic only, so a config validates without importing torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LoRAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (alpha / rank scales the update).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="Layers that get adapters.")
    max_length: int = Field(384, gt=16, description="Tokens per training example (prompt + completion).")
