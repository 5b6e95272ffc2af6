"""The judge (score model): (query, document) → level with probabilities.

Backends register by name; each is imported only when used, so reading a config needs no torch.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from relevel.data.scale import LevelScale
from relevel.errors import RelevelError
from relevel.models.judge.base import Judge
from relevel.models.judge.config import JudgeConfig

BACKENDS = {
    "embedding-features": "relevel.models.judge.features:EmbeddingFeatureJudge",
    "cross-encoder": "relevel.models.judge.cross_encoder:CrossEncoderJudge",
}
JUDGE_FILE = "judge.json"


def _backend(name: str) -> type[Judge]:
    if name not in BACKENDS:
        raise RelevelError(f"unknown judge backend {name!r}; known: {', '.join(BACKENDS)}. "
                           "Register one in relevel.models.judge.BACKENDS.")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_judge(scale: LevelScale, config: JudgeConfig, encoder_store: Path | None = None) -> Judge:
    """A new, untrained judge on the configured base model."""
    return _backend(config.backend).from_base(scale, config, encoder_store)


def load_judge(path: Path, encoder_store: Path | None = None) -> Judge:
    meta_file = Path(path) / JUDGE_FILE
    if not meta_file.is_file():
        raise RelevelError(f"{path}: not a trained judge (no {JUDGE_FILE}); train one with `relevel judge train`")
    try:
        backend = json.loads(meta_file.read_text(encoding="utf-8"))["backend"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise RelevelError(f"{meta_file}: unreadable judge description ({exc})") from None
    return _backend(backend).load(path, encoder_store)
