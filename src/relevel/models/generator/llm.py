"""Prompt-only query synthesis: a chat model behind an OpenAI-compatible endpoint writes queries for a
document at a target level, shown the scale's definitions and a few labelled examples per level. Nothing is
trained: `fit` only draws the examples. It is the experiment's "prompt-only LLM synthesis" baseline, and a
generator in its own right for users with a strong model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.generator import GENERATOR_FILE
from relevel.models.generator.base import QueryGenerator
from relevel.models.generator.config import GeneratorConfig
from relevel.models.llm.client import ChatRequest, UsesLLMClient
from relevel.models.llm.parse import queries_of, queries_schema
from relevel.models.llm.prompts import Prompts

EXAMPLE_DOCUMENT_CHARS = 200  # few-shot documents are cut: the prompt should spend its tokens on the task


class PromptOnlyGenerator(UsesLLMClient, QueryGenerator):
    BACKEND = "llm-prompt"

    def __init__(self, scale: LevelScale, config: GeneratorConfig, examples: list[dict] | None = None):
        super().__init__(scale)
        if config.llm is None:
            raise RelevelError("generator.backend 'llm-prompt' needs an endpoint: set `llm:` (or "
                               "`generator.llm:`) in the config")
        self.config, self.llm, self.examples = config, config.llm, examples or []
        self.prompts = Prompts(config.llm.prompts_dir)

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None, init_from: Path | None = None) -> dict:
        """Draws `few_shot_per_level` labelled examples per level (seeded): the prompt's few shots."""
        rng = np.random.default_rng(self.config.seed)
        self.examples = []
        for level in range(self.scale.num_levels):
            at_level = [p for p in train if p.level == level]
            for i in sorted(rng.permutation(len(at_level))[:self.config.few_shot_per_level]):
                self.examples.append({"level": level, "query": at_level[i].query,
                                      "document": at_level[i].doc[:EXAMPLE_DOCUMENT_CHARS]})
        return {"train_examples": len(self.examples), "few_shot_examples": len(self.examples)}

    def generate(self, docs: Sequence[str], levels: Sequence[int], n: int, seed: int = 0,
                 progress: bool = False) -> list[list[str]]:
        requests = [ChatRequest(self.prompts.messages("synthesize", scale=self.scale, level=self.scale.levels[level],
                                                      examples=self.examples, document=doc, n=n),
                                temperature=self.config.temperature, seed=seed + i, schema=queries_schema(n))
                    for i, (doc, level) in enumerate(zip(docs, levels))]
        answers = self.client.complete(requests, lambda answer: queries_of(answer, n), progress, "LLM synthesis")
        return [found or [] for found in answers]  # an unparseable answer: no candidates (counted in usage)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / GENERATOR_FILE).write_text(json.dumps({
            "backend": self.BACKEND, "scale": self.scale.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"), "examples": self.examples,
            "prompts": self.prompts.fingerprint()}, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> PromptOnlyGenerator:
        meta = json.loads((Path(path) / GENERATOR_FILE).read_text(encoding="utf-8"))
        return cls(LevelScale.model_validate(meta["scale"]), GeneratorConfig.model_validate(meta["config"]),
                   meta["examples"])
