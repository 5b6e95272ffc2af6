"""Train the embedder on one variant's training set, and evaluate embedders and BM25 on the evaluation split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.eval.retrieval import GradedPairs, graded_metrics, ndcg10_per_query, retrieval_corpus, top_k_run
from relevel.models.embedder.config import EmbedderConfig
from relevel.pipeline.filter import kept_pairs
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.step import INPUT_FILE, Step, StepContext, StepResult, Work, encoder_store

# What each experiment variant trains on (the vanilla-generator and prompt-only LLM rows need parts this
# version does not have; see the README).
VARIANTS = {
    "real": "real pairs only",
    "stage1": "real + queries of the stage-1 generator kept by the judge (round 1, before any retraining)",
    "ssra": "real + every round's kept synthetic queries (full SSRA)",
    "ssra-binary": "full SSRA without intermediate levels: top level positive, level 0 negative",
    "vanilla": "real + queries of a generator trained on the original pairs only (no re-annotation, no rounds), "
               "kept by the same judge",
    "prompt-only": "real + queries a prompted LLM wrote (few-shot, no training), kept by the same judge",
}
Variant = Literal["real", "stage1", "ssra", "ssra-binary", "vanilla", "prompt-only"]




def graded_pairs(folder) -> GradedPairs:
    records = list(read_records(folder))
    return GradedPairs([r["query"] for r in records], [r["doc"] for r in records],
                       np.array([r["level"] for r in records]))


@dataclass(kw_only=True)
class TrainEmbedder(Step):
    """Fine-tunes the embedder on real pairs plus, per variant, the kept synthetic queries; hard negatives
    are mined from every training and unlabelled document."""

    VERSION: ClassVar[int] = 3  # 2: frozen layers from the store, without dropout; 3: CoSENT batches per labeller
    inputs: ClassVar[tuple[str, ...]] = ("train",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("synthetic", "unlabeled")
    outputs: ClassVar[tuple[str, ...]] = ("model",)
    SECONDS_PER_ITEM: ClassVar[float] = 1.4  # per step at batch 32, top 4 layers, CoSENT, store included

    scale: LevelScale
    config: EmbedderConfig
    variant: Variant

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if self.config.steps:
            return Work(self.config.steps)
        if "train" not in sizes:
            return None
        pairs = sizes["train"] + sizes.get("synthetic", 0)
        return Work(round(self.config.epochs * pairs / self.config.batch_size))

    def run(self, ctx: StepContext) -> StepResult:
        from relevel.models.embedder import train_embedder

        pairs = [LabeledPair(**r) for r in read_records(ctx.inputs["train"])]
        synthetic = kept_pairs(ctx.inputs["synthetic"]) if "synthetic" in ctx.inputs else []
        pairs += synthetic
        if self.variant == "ssra-binary":
            pairs = [p for p in pairs if p.level in (0, self.scale.max_level)]
        corpus = sorted({p.doc for p in pairs} | {r["text"] for r in read_records(ctx.inputs["unlabeled"])}
                        if "unlabeled" in ctx.inputs else {p.doc for p in pairs})
        report = train_embedder(self.config, self.scale, pairs, corpus, ctx.step_dir / "model", ctx.step_dir,
                                encoder_store(ctx), ctx.progress)
        return StepResult(counts={"pairs": len(pairs), "synthetic": len(synthetic)}, metrics={"fit": report})


@dataclass(kw_only=True)
class EvaluateEmbedder(Step):
    """Graded metrics of a trained embedder (`model` bound) or of the untrained base (zero-shot), with
    per-query NDCG@10 and per-pair scores kept for paired bootstrap intervals."""

    inputs: ClassVar[tuple[str, ...]] = ("pairs",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("model", "distractors")
    outputs: ClassVar[tuple[str, ...]] = ("scores",)
    SECONDS_PER_ITEM: ClassVar[float] = 0.018  # per evaluation pair or distractor

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        return (Work(sizes["pairs"] + sizes.get("distractors", 0), {"scores": sizes["pairs"]}) if "pairs" in sizes
                else None)

    scale: LevelScale
    config: EmbedderConfig  # the base and prompts for zero-shot
    model: Path | None = field(default=None, metadata=INPUT_FILE)  # a saved embedder, instead of a bound one

    def __post_init__(self):
        # keyed on what evaluation reads only: a training setting (lr, steps) does not redo an evaluation
        self.config = self.config.for_evaluation()

    def run(self, ctx: StepContext) -> StepResult:
        from relevel.eval.evaluator import GradedEvaluator
        from relevel.models.embedder import build_embedder, load_embedder

        saved = ctx.inputs.get("model") or self.model
        model = load_embedder(saved) if saved else build_embedder(self.config)
        pairs = graded_pairs(ctx.inputs["pairs"])
        prompts = {"query": self.config.query_prompt, "document": self.config.document_prompt}
        evaluator = GradedEvaluator(pairs, self.scale.relevance_thresholds, self.config.matryoshka_dims,
                                    prompts=prompts, distractors=distractor_texts(ctx))
        return self.finish(ctx, pairs, len(evaluator.corpus), *evaluator.evaluate(model))

    @staticmethod
    def finish(ctx: StepContext, pairs: GradedPairs, corpus_size: int, metrics: dict, pair_scores: np.ndarray,
               run: dict) -> StepResult:
        per_query = ndcg10_per_query(run, pairs.qrels())
        records = [{"query": q, "level": int(level), "score": float(s), "query_ndcg@10": per_query.get(q)}
                   for q, level, s in zip(pairs.queries, pairs.levels, pair_scores)]
        ChunkedOutputs(ctx.step_dir, ("scores",)).write_all({"scores": records}, ctx.chunk_size)
        return StepResult(counts={"pairs": len(records), "queries_judged": len(per_query), "corpus": corpus_size},
                          metrics=metrics)


def distractor_texts(ctx: StepContext) -> list[str]:
    return [r["text"] for r in read_records(ctx.inputs["distractors"])] if "distractors" in ctx.inputs else []


@dataclass(kw_only=True)
class EvaluateBM25(Step):
    """The lexical baseline on the same split and metrics (jieba words, bm25s)."""

    inputs: ClassVar[tuple[str, ...]] = ("pairs",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("distractors",)
    outputs: ClassVar[tuple[str, ...]] = ("scores",)
    SECONDS_PER_ITEM: ClassVar[float] = 0.0012
    estimate = EvaluateEmbedder.estimate

    scale: LevelScale

    def run(self, ctx: StepContext) -> StepResult:
        from relevel.models.bm25 import BM25Index

        pairs = graded_pairs(ctx.inputs["pairs"])
        corpus = retrieval_corpus(pairs, distractor_texts(ctx))
        corpus_scores = BM25Index(corpus).score_all(pairs.unique_queries)
        query_row = {q: i for i, q in enumerate(pairs.unique_queries)}
        doc_row = {d: i for i, d in enumerate(corpus)}
        pair_scores = np.array([corpus_scores[query_row[q], doc_row[d]] for q, d in zip(pairs.queries, pairs.docs)])
        metrics = graded_metrics(pairs, pair_scores, corpus_scores, self.scale.relevance_thresholds, corpus)
        run = top_k_run(pairs.unique_queries, corpus, corpus_scores)
        return EvaluateEmbedder.finish(ctx, pairs, len(corpus), metrics, pair_scores, run)
