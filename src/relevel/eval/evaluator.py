"""`GradedEvaluator`: the sentence-transformers evaluator that encodes an evaluation split once and reports
every graded metric of `relevel.eval.retrieval`, at full size and at each truncated Matryoshka dimension."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from relevel.eval.retrieval import GradedPairs, graded_metrics, retrieval_corpus, top_k_run


class GradedEvaluator(SentenceEvaluator):
    """Encodes the split's queries and documents once (with the model's `query` / `document` prompts) and
    reports every graded metric at full size and at each truncated Matryoshka dimension. `evaluate` also
    returns the full-size pair scores and retrieval run, for per-query statistics; nothing is kept between
    calls."""

    def __init__(self, pairs: GradedPairs, thresholds: Sequence[int], dims: Sequence[int] | None = None,
                 name: str = "dev", batch_size: int = 64, prompts: dict[str, str] | None = None,
                 distractors: Sequence[str] = ()):
        super().__init__()
        self.pairs, self.thresholds, self.dims, self.name, self.batch_size = pairs, thresholds, dims, name, batch_size
        self.corpus = retrieval_corpus(pairs, distractors)  # the split's documents first, then the distractors
        self.prompts = prompts or {}  # for a model saved without `query` / `document` prompts
        self.primary_metric = "ndcg@10"
        self.greater_is_better = True

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        return self.evaluate(model)[0]

    def evaluate(self, model) -> tuple[dict[str, float], np.ndarray, dict[str, dict[str, float]]]:
        roles = (("query", self.pairs.unique_queries), ("document", self.corpus))
        queries, docs = (model.encode(texts, prompt=model.prompts.get(role, self.prompts.get(role, "")),
                                      batch_size=self.batch_size, convert_to_numpy=True) for role, texts in roles)
        metrics, pair_scores, corpus_scores = self.compute(queries, docs)
        for dim in self.dims or ():
            if dim < queries.shape[1]:
                small, *_ = self.compute(queries[:, :dim], docs[:, :dim])
                metrics.update({f"{k}@dim{dim}": v for k, v in small.items()
                                if k in ("ndcg@10", "spearman") or k.startswith("ap@")})
        return metrics, pair_scores, top_k_run(self.pairs.unique_queries, self.corpus, corpus_scores)

    def compute(self, queries: np.ndarray, docs: np.ndarray) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """`docs`: the embeddings of `self.corpus`, in its order."""
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
        query_row = {q: i for i, q in enumerate(self.pairs.unique_queries)}
        doc_row = {d: i for i, d in enumerate(self.corpus)}
        pair_scores = np.einsum("ij,ij->i", queries[[query_row[q] for q in self.pairs.queries]],
                                docs[[doc_row[d] for d in self.pairs.docs]])
        corpus_scores = queries @ docs.T
        metrics = graded_metrics(self.pairs, pair_scores, corpus_scores, self.thresholds, self.corpus)
        return metrics, pair_scores, corpus_scores
