"""The level-controlled query generator: (document, target level) → query.

Backends register by name; each is imported only when used, so reading a config needs no torch.
"""

from __future__ import annotations

from pathlib import Path

from relevel.data.scale import LevelScale
from relevel.models.generator.base import QueryGenerator
from relevel.models.generator.config import GeneratorConfig
from relevel.models.registry import import_backend, saved_backend

BACKENDS = {"seq2seq": "relevel.models.generator.seq2seq:Seq2SeqGenerator",
            "causal-lm": "relevel.models.generator.causal:CausalLMGenerator",
            "llm-prompt": "relevel.models.generator.llm:PromptOnlyGenerator"}
GENERATOR_FILE = "generator.json"


def create_generator(scale: LevelScale, config: GeneratorConfig, encoder_store: Path | None = None
                     ) -> QueryGenerator:
    return import_backend(BACKENDS, config.backend, "generator").from_base(scale, config, encoder_store)


def load_generator(path: Path, encoder_store: Path | None = None) -> QueryGenerator:
    backend = saved_backend(path, GENERATOR_FILE, "generator", "train one with `relevel stage1`")
    return import_backend(BACKENDS, backend, "generator").load(path, encoder_store)
