"""Reasoning-tuned judge: a chat LM fine-tuned with LoRA (trl SFTTrainer + peft) on (pair → reasoning +
level), the reasoning written by a teacher LLM behind the `llm:` endpoint (the SSRA paper's score model).
The level's probabilities are the LM's next-token probabilities of the level labels after "Level:", read
after the model's own reasoning, or straight after the prompt with `reasoning: false` (one forward pass per
pair instead of a generation: much faster).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.causal_lm import ADAPTER_DIR, CausalLM, UsesCausalLM
from relevel.models.judge import JUDGE_FILE
from relevel.models.judge.base import Judge, fit_temperature
from relevel.models.judge.config import JudgeConfig
from relevel.models.llm.client import ChatRequest, LLMClient, ParseError
from relevel.models.llm.parse import json_object, level_schema
from relevel.models.llm.prompts import Prompts

LEVEL_PREFIX = "Level:"


def pair_prompt(scale: LevelScale, query: str, doc: str) -> list[dict]:
    """The model's input format (fixed: the adapters learn it)."""
    levels = "; ".join(f"{lv.value} = {lv.name}" + (f" ({lv.description})" if lv.description else "")
                       for lv in scale.levels)
    return [{"role": "user", "content": f"Query: {query}\nDocument: {doc}\nHow relevant is the "
                                        f"document to the query? Levels: {levels}."}]


def teacher_reasoning(answer) -> str:
    reasoning = json_object(answer.content).get("reasoning")
    if not isinstance(reasoning, str) or not reasoning.strip():
        raise ParseError("'reasoning' must be a non-empty string")
    return " ".join(reasoning.split())


class ReasoningJudge(UsesCausalLM, Judge):
    BACKEND = "reasoning-lm"

    def __init__(self, scale: LevelScale, config: JudgeConfig, lm: CausalLM | None = None, temperature: float = 1.0):
        super().__init__(scale, temperature)
        if config.reasoning and config.llm is None:
            raise RelevelError("judge.backend 'reasoning-lm' with reasoning: true learns from a teacher LLM: set "
                               "`llm:` (or `judge.llm:`), or reasoning: false")
        self.config, self._lm = config, lm
        self._teacher: LLMClient | None = None

    def teach(self, pairs: Sequence[LabeledPair], progress: bool) -> list[str | None]:
        """The teacher's explanation of each pair's (human) level; None where it stayed unparseable."""
        self._teacher = LLMClient(self.config.llm)
        prompts = Prompts(self.config.llm.prompts_dir)
        requests = [ChatRequest(prompts.messages("teacher", scale=self.scale, query=p.query, document=p.doc,
                                                 level=self.scale.levels[p.level]), schema=level_schema(self.scale))
                    for p in pairs]
        return self._teacher.complete(requests, teacher_reasoning, progress, "teacher reasoning")

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None) -> dict:
        rng = np.random.default_rng(self.config.seed)
        sample = [train[i] for i in sorted(rng.permutation(len(train))[:self.config.train_examples])]
        if self.config.reasoning:
            reasons = self.teach(sample, progress)
            taught = [(p, r) for p, r in zip(sample, reasons) if r is not None]
            completions = [(p, f"{r}\n{LEVEL_PREFIX} {p.level}") for p, r in taught]
        else:
            completions = [(p, f"{LEVEL_PREFIX} {p.level}") for p in sample]
        examples = [(self.prompt(p.query, p.doc), text) for p, text in completions]
        report = self.lm.fit(examples, self.config.lora, self.config, Path(work_dir or ".") / "lm-checkpoints",
                             progress)
        calibration = [tune[i] for i in sorted(rng.permutation(len(tune))[:self.config.calibration_pairs])]
        logits = self.logits([p.query for p in calibration], [p.doc for p in calibration], progress=progress)
        labels = np.array([p.level for p in calibration])
        if self.config.calibrate and len(calibration):
            self.temperature = fit_temperature(logits, labels)
        return {**report, "train_pairs": len(sample), "best_step": report["steps"], "tune_pairs": len(calibration),
                "temperature": self.temperature, "reasoning": self.config.reasoning,
                **({"llm": self.usage()} if self._teacher else {}), "tune_logits": logits, "tune_labels": labels}

    def batch_logits(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        prompts = [self.prompt(q, d) for q, d in zip(queries, docs)]
        prefix_ids, level_ids = self.lm.label_tokens(LEVEL_PREFIX + " ", [str(lv.value) for lv in self.scale.levels])
        if self.config.reasoning:  # the model's own reasoning first, cut where it starts to state the level
            reasoning = [text.rstrip() + "\n" for text in
                         self.lm.greedy(prompts, self.config.max_reasoning_tokens, LEVEL_PREFIX)]
        else:
            reasoning = [""] * len(prompts)
        return self.lm.next_token_logits(prompts, reasoning, prefix_ids, level_ids).numpy()

    def prompt(self, query: str, doc: str) -> list[dict]:
        return pair_prompt(self.scale, query, self.lm.truncate(doc, self.config.max_length))

    def usage(self) -> dict:
        return self._teacher.stats.as_dict() if self._teacher is not None else {}

    def save(self, path: Path) -> None:
        self.lm.save(path, {})
        (Path(path) / JUDGE_FILE).write_text(json.dumps({
            "backend": self.BACKEND, "scale": self.scale.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"), "temperature": self.temperature}, indent=2),
            encoding="utf-8")

    @classmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> ReasoningJudge:
        meta = json.loads((Path(path) / JUDGE_FILE).read_text(encoding="utf-8"))
        config = JudgeConfig(**meta["config"])
        return cls(LevelScale(**meta["scale"]), config, CausalLM.load(config.causal_model, Path(path) / ADAPTER_DIR),
                   meta["temperature"])
