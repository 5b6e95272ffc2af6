"""Causal-LM backends with LoRA on the offline SmolLM2-135M-Instruct (real model, tiny slices): the query
generator and the reasoning-tuned judge, whose teacher is the real llama.cpp server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from relevel.config import load_config
from relevel.data.schema import LabeledPair
from relevel.models.generator.config import GeneratorConfig
from relevel.models.judge.config import JudgeConfig
from relevel.models.llm.config import LLMConfig
from relevel.models.lora import LoRAConfig

DEMO = Path(__file__).resolve().parents[1] / "src" / "relevel" / "demo"
SCALE = load_config("builtin:demo/demo.yaml").scale
TINY_LORA = LoRAConfig(rank=4, alpha=8, max_length=160)
# SmolLM2 spends ~3 tokens per Chinese character and a CPU step costs ~1 s per 100 tokens: short documents,
# one or two optimiser steps per fit, keep these real-model tests to minutes


def demo_pairs(n: int) -> list[LabeledPair]:
    rows = [json.loads(line) for line in (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n]]
    return [LabeledPair(id=f"t{i}", query=r["query"], doc_id=f"d{i}", doc=f"{r['title']} {r['video_text']}",
                        level=int(r["label"])) for i, r in enumerate(rows)]


def test_causal_lm_generator_trains_saves_loads_warm_starts_and_writes_queries(tmp_path):
    from relevel.models.generator.causal import CausalLMGenerator

    config = GeneratorConfig(backend="causal-lm", epochs=1, batch_size=4, max_document_tokens=24,
                             max_query_tokens=8, lora=TINY_LORA)
    pairs = demo_pairs(8)
    generator = CausalLMGenerator(SCALE, config)
    report = generator.fit(pairs, [], work_dir=tmp_path)
    assert report["steps"] == 2 and report["train_examples"] == 8 and np.isfinite(report["train_loss"])
    generator.save(tmp_path / "generator")
    assert (tmp_path / "generator" / "adapter" / "adapter_config.json").is_file()
    loaded = CausalLMGenerator.load(tmp_path / "generator")
    queries = loaded.generate([pairs[0].doc, pairs[1].doc], [3, 0], n=2, seed=1)
    assert len(queries) == 2 and all(1 <= len(q) <= 2 and all(isinstance(s, str) and s for s in q) for q in queries)
    assert loaded.generate([pairs[0].doc, pairs[1].doc], [3, 0], n=2, seed=1) == queries  # seeded: repeatable
    again = CausalLMGenerator(SCALE, config).fit(pairs[:4], [], work_dir=tmp_path, init_from=tmp_path / "generator")
    assert again["warm_start"] and again["steps"] == 1


def test_a_base_lm_without_chat_template_learns_plain_text_prompts(tmp_path):
    """A base model (gemma-3-270m has no chat template) reads the prompt as plain text and answers on the next
    line; SmolLM2 with its template taken away stands in."""
    from relevel.models.generator.causal import CausalLMGenerator

    config = GeneratorConfig(backend="causal-lm", epochs=1, batch_size=4, max_document_tokens=24,
                             max_query_tokens=8, lora=TINY_LORA)
    generator = CausalLMGenerator(SCALE, config)
    generator.lm.tokenizer.chat_template = None
    pairs = demo_pairs(4)
    text = generator.lm.prompt_text(generator.prompt(pairs[0].doc, 3))
    assert text.startswith("Document: ") and text.endswith("(perfect: " + SCALE.levels[3].description + ").\n")
    assert generator.fit(pairs, [], work_dir=tmp_path)["train_examples"] == 4
    queries = generator.generate([pairs[0].doc], [3], n=2, seed=1)
    assert len(queries) == 1 and 1 <= len(queries[0]) <= 2 and all(q and "Document:" not in q for q in queries[0])


def test_reasoning_judge_learns_from_the_teacher_and_without_reasoning(llm_server, tmp_path):
    from relevel.models.judge.reasoning import ReasoningJudge

    teacher = LLMConfig(base_url=llm_server.base_url, model="smollm2", cache_dir=tmp_path / "cache", max_tokens=64,
                        response_format="llama_cpp_schema")
    pairs = demo_pairs(8)
    common = dict(backend="reasoning-lm", epochs=1, batch_size=4, max_length=24, lora=TINY_LORA, train_examples=4,
                  calibration_pairs=2)
    judge = ReasoningJudge(SCALE, JudgeConfig(**common, llm=teacher, reasoning=True, max_reasoning_tokens=8))
    report = judge.fit(pairs[:6], pairs[6:], work_dir=tmp_path)
    assert report["llm"]["answers"] + report["llm"]["failed"] == 4 and report["reasoning"]
    assert report["train_examples"] == report["llm"]["answers"] and report["tune_logits"].shape == (2, 4)
    judge.save(tmp_path / "judge")
    prediction = ReasoningJudge.load(tmp_path / "judge").predict([p.query for p in pairs[:2]],
                                                                 [p.doc for p in pairs[:2]])
    assert prediction.probs.shape == (2, 4) and np.allclose(prediction.probs.sum(axis=1), 1)
    fast = ReasoningJudge(SCALE, JudgeConfig(**common, reasoning=False))
    assert fast.fit(pairs[:6], pairs[6:], work_dir=tmp_path)["train_examples"] == 4
    assert fast.usage() == {}  # no teacher asked
    probs = fast.predict([p.query for p in pairs[:2]], [p.doc for p in pairs[:2]]).probs
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1)
