"""The level-controlled query generator: (document, target level) → query.

Backends register by name; each is imported only when used, so reading a config needs no torch.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from relevel.data.scale import LevelScale
from relevel.errors import RelevelError
from relevel.models.generator.base import QueryGenerator
from relevel.models.generator.config import GeneratorConfig

BACKENDS = {"seq2seq": "relevel.models.generator.seq2seq:Seq2SeqGenerator"}
GENERATOR_FILE = "generator.json"


def _backend(name: str) -> type[QueryGenerator]:
    if name not in BACKENDS:
        raise RelevelError(f"unknown generator backend {name!r}; known: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_generator(scale: LevelScale, config: GeneratorConfig, encoder_store: Path | None = None
                     ) -> QueryGenerator:
    return _backend(config.backend).from_base(scale, config, encoder_store)


def load_generator(path: Path, encoder_store: Path | None = None) -> QueryGenerator:
    meta_file = Path(path) / GENERATOR_FILE
    if not meta_file.is_file():
        raise RelevelError(f"{path}: not a trained generator (no {GENERATOR_FILE}); train one with `relevel stage1`")
    try:
        backend = json.loads(meta_file.read_text(encoding="utf-8"))["backend"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise RelevelError(f"{meta_file}: unreadable generator description ({exc})") from None
    return _backend(backend).load(path, encoder_store)
