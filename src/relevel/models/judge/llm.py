"""LLM judge: a chat model behind an OpenAI-compatible endpoint reasons briefly, then states the level.

The level's probabilities come from the top log-probabilities at the token where the answer writes it (when
the server returns them), so temperature calibration on the tune slice works as for the local judges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.judge import JUDGE_FILE
from relevel.models.judge.base import Judge, fit_temperature
from relevel.models.judge.config import JudgeConfig
from relevel.models.llm.client import ChatRequest, UsesLLMClient
from relevel.models.llm.parse import level_logits, level_schema
from relevel.models.llm.prompts import Prompts

MIN_ANSWERS_FOR_FAILURE_RATE = 20  # a failure rate over fewer answers says little


class LLMJudge(UsesLLMClient, Judge):
    BACKEND = "llm"

    def __init__(self, scale: LevelScale, config: JudgeConfig, temperature: float = 1.0):
        super().__init__(scale, temperature)
        if config.llm is None:
            raise RelevelError("judge.backend 'llm' needs an endpoint: set `llm:` (or `judge.llm:`) in the config")
        self.config, self.llm = config, config.llm
        self.prompts = Prompts(self.llm.prompts_dir)

    @classmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> LLMJudge:
        meta = json.loads((Path(path) / JUDGE_FILE).read_text(encoding="utf-8"))
        return cls(LevelScale(**meta["scale"]), JudgeConfig(**meta["config"]), meta["temperature"])

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None) -> dict:
        """Nothing to train: judge a seeded sample of the tune slice to calibrate the temperature and report."""
        rng = np.random.default_rng(self.config.seed)
        sample = [tune[i] for i in sorted(rng.permutation(len(tune))[:self.config.calibration_pairs])]
        logits = self.logits([p.query for p in sample], [p.doc for p in sample], batch_size=len(sample) or 1,
                             progress=progress)
        labels = np.array([p.level for p in sample])
        if self.config.calibrate and len(sample):
            self.temperature = fit_temperature(logits, labels)
        return {"calibration_pairs": len(sample), "temperature": self.temperature, "llm": self.usage(),
                "tune_logits": logits, "tune_labels": labels}

    def batch_logits(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        requests = [ChatRequest(self.prompts.messages("judge", scale=self.scale, query=q, document=d),
                                logprobs=self.llm.logprobs, schema=level_schema(self.scale))
                    for q, d in zip(queries, docs)]
        answers = self.client.complete(requests, lambda answer: level_logits(answer, self.scale), desc="LLM judge")
        self._check_failures()
        # an answer that stayed unparseable carries no information: equal logits (counted in usage()["failed"])
        return np.array([a if a is not None else [0.0] * self.scale.num_levels for a in answers], dtype=np.float32)

    def _check_failures(self) -> None:
        stats = self.client.stats
        total = stats.answers + stats.failed
        if total >= MIN_ANSWERS_FOR_FAILURE_RATE and stats.failed / total > self.llm.max_failure_rate:
            raise RelevelError(f"LLM judge: {stats.failed} of {total} answers stayed unparseable (more than "
                               f"llm.max_failure_rate {self.llm.max_failure_rate}); check the model and "
                               "the judge prompt")

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / JUDGE_FILE).write_text(json.dumps({
            "backend": self.BACKEND, "scale": self.scale.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"), "temperature": self.temperature,
            "prompts": self.prompts.fingerprint()}, indent=2), encoding="utf-8")
