"""Causal-LM query generator: a chat LM fine-tuned with LoRA on (document, target level) → query. The offline
default is SmolLM2-135M-Instruct; on a GPU any hub model (e.g. Qwen/Qwen2.5-1.5B-Instruct) via
`generator.causal_model`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.models.causal_lm import ADAPTER_DIR, CausalLM, UsesCausalLM
from relevel.models.generator import GENERATOR_FILE
from relevel.models.generator.base import QueryGenerator
from relevel.models.generator.config import GeneratorConfig


def query_prompt(scale: LevelScale, doc: str, level: int) -> list[dict]:
    """The model's input format (fixed: the adapters learn it)."""
    target = scale.levels[level]
    meaning = f": {target.description}" if target.description else ""
    return [{"role": "user", "content": f"Document: {doc}\nWrite a search query for which this "
                                        f"document is at relevance level {target.value} ({target.name}{meaning})."}]


class CausalLMGenerator(UsesCausalLM, QueryGenerator):
    BACKEND = "causal-lm"

    def __init__(self, scale: LevelScale, config: GeneratorConfig, lm: CausalLM | None = None):
        super().__init__(scale)
        self.config, self._lm = config, lm

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None, init_from: Path | None = None) -> dict:
        """LoRA SFT on every (document, level) → query example; a warm start continues `init_from`'s adapters.
        `tune` is not used for early stopping here (epochs are the budget); its size is reported."""
        if init_from is not None:
            self._lm = CausalLM.load(self.config.causal_model, Path(init_from) / ADAPTER_DIR)
        examples = [(self.prompt(p.doc, p.level), p.query) for p in train]
        report = self.lm.fit(examples, self.config.lora, self.config, Path(work_dir or ".") / "lm-checkpoints",
                             progress)
        return {**report, "tune_examples": len(tune), "warm_start": init_from is not None}

    def generate(self, docs: Sequence[str], levels: Sequence[int], n: int, seed: int = 0,
                 progress: bool = False) -> list[list[str]]:
        prompts = [self.prompt(doc, level) for doc, level in zip(docs, levels)]
        sampled = self.lm.sample(prompts, n, self.config.max_query_tokens, self.config.temperature, self.config.top_p,
                                 seed)
        return [list(dict.fromkeys(q.strip().splitlines()[0].strip() for q in queries if q.strip()))
                for queries in sampled]

    def prompt(self, doc: str, level: int) -> list[dict]:
        return query_prompt(self.scale, self.lm.truncate(doc, self.config.max_document_tokens), level)

    def save(self, path: Path) -> None:
        self.lm.save(path, {})
        (Path(path) / GENERATOR_FILE).write_text(json.dumps({
            "backend": self.BACKEND, "scale": self.scale.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json")}, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> CausalLMGenerator:
        meta = json.loads((Path(path) / GENERATOR_FILE).read_text(encoding="utf-8"))
        config = GeneratorConfig.model_validate(meta["config"])
        return cls(LevelScale.model_validate(meta["scale"]), config,
                   CausalLM.load(config.causal_model, Path(path) / ADAPTER_DIR))
