"""The judge (score model): (query, document) → level with probabilities.

Backends register by name; each is imported only when used, so reading a config needs no torch.
"""

from __future__ import annotations

from pathlib import Path

from relevel.data.scale import LevelScale
from relevel.models.judge.base import Judge
from relevel.models.judge.config import JudgeConfig
from relevel.models.registry import import_backend, saved_backend

BACKENDS = {
    "embedding-features": "relevel.models.judge.features:EmbeddingFeatureJudge",
    "cross-encoder": "relevel.models.judge.cross_encoder:CrossEncoderJudge",
    "llm": "relevel.models.judge.llm:LLMJudge",
    "reasoning-lm": "relevel.models.judge.reasoning:ReasoningJudge",
}
JUDGE_FILE = "judge.json"


def create_judge(scale: LevelScale, config: JudgeConfig, encoder_store: Path | None = None) -> Judge:
    """A new, untrained judge on the configured base model."""
    return import_backend(BACKENDS, config.backend, "judge").from_base(scale, config, encoder_store)


def load_judge(path: Path, encoder_store: Path | None = None) -> Judge:
    backend = saved_backend(path, JUDGE_FILE, "judge", "train one with `relevel judge train`")
    return import_backend(BACKENDS, backend, "judge").load(path, encoder_store)
