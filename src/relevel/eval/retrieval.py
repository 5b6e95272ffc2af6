"""Graded evaluation of a scorer of (query, document) pairs: retrieval over the evaluation corpus (the split's
documents, optionally plus a pool of distractors) with graded
gains (NDCG@5/@10, recall@10 via pytrec_eval), re-ranking of each query's own labelled candidates, average
precision for "level ≥ t" at every threshold, and Spearman between score and level.

The metric functions take scores, so the embedder, the zero-shot base and BM25 share them; the
sentence-transformers evaluator that encodes once lives in `relevel.eval.evaluator` (importing
sentence-transformers costs seconds, which every command would otherwise pay at start-up).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytrec_eval
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score

from relevel.data.schema import normalize_text

RETRIEVAL_DEPTH = 100  # documents kept per query from full-corpus retrieval; enough for @10 metrics


@dataclass(frozen=True)
class GradedPairs:
    """Labelled (query, document, level) pairs of an evaluation split, with ids for queries and documents."""

    queries: list[str]  # per pair
    docs: list[str]
    levels: np.ndarray

    @property
    def unique_queries(self) -> list[str]:
        return sorted(set(self.queries))

    @property
    def unique_docs(self) -> list[str]:
        return sorted(set(self.docs))

    def qrels(self) -> dict[str, dict[str, int]]:
        """Graded relevance per query; queries without a pair at level ≥ 1 are left out (nothing to find)."""
        relevant: dict[str, dict[str, int]] = defaultdict(dict)
        for query, doc, level in zip(self.queries, self.docs, self.levels):
            relevant[query][doc] = max(int(level), relevant[query].get(doc, 0))
        return {q: docs for q, docs in relevant.items() if max(docs.values()) >= 1}


def retrieval_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean NDCG@5, NDCG@10 (graded gains = levels) and recall@10 (level ≥ 1) over the judged queries."""
    measures = {"ndcg_cut.5,10", "recall.10"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=1).evaluate(
        {q: run.get(q, {}) for q in qrels})
    return {name: float(np.mean([m[key] for m in per_query.values()]))
            for name, key in (("ndcg@5", "ndcg_cut_5"), ("ndcg@10", "ndcg_cut_10"), ("recall@10", "recall_10"))}


def ndcg10_per_query(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Per-query NDCG@10, for paired bootstrap intervals between two systems."""
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate({q: run.get(q, {}) for q in qrels})
    return {q: m["ndcg_cut_10"] for q, m in per_query.items()}


def pair_metrics(scores: np.ndarray, levels: np.ndarray, thresholds: Sequence[int]) -> dict[str, float]:
    """Spearman between score and level, and AP of the score for "level ≥ t" at each threshold t."""
    out = {"spearman": float(spearmanr(scores, levels).statistic)}
    for t in thresholds:
        positive = levels >= t
        out[f"ap@level>={t}"] = float(average_precision_score(positive, scores)) if positive.any() else float("nan")
    return out


def rerank_run(pairs: GradedPairs, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """The paper's protocol: each query's own labelled candidates, ranked by score."""
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for query, doc, score in zip(pairs.queries, pairs.docs, scores):
        run[query][doc] = float(score)
    return run


def top_k_run(query_ids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, k: int = RETRIEVAL_DEPTH
              ) -> dict[str, dict[str, float]]:
    """Full-corpus retrieval: for each query (row of `scores`), its k best documents."""
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {q: {doc_ids[j]: float(scores[i, j]) for j in best[i]} for i, q in enumerate(query_ids)}


def retrieval_corpus(pairs: GradedPairs, distractors: Sequence[str] = ()) -> list[str]:
    """The split's documents, then the distractors that are not among them once normalised (unlabelled for
    every query, a distractor counts as irrelevant: it can only push relevant documents down)."""
    docs = pairs.unique_docs
    seen = {normalize_text(d) for d in docs}
    extra = {}
    for text in sorted(set(distractors)):
        extra.setdefault(normalize_text(text), text)
    return docs + [text for key, text in extra.items() if key not in seen]


def graded_metrics(pairs: GradedPairs, pair_scores: np.ndarray, corpus_scores: np.ndarray,
                   thresholds: Sequence[int], corpus: Sequence[str] | None = None) -> dict[str, float]:
    """Every metric for one scorer: `pair_scores` per labelled pair, `corpus_scores` (unique queries ×
    `corpus`, by default the split's unique documents) for full-corpus retrieval."""
    qrels = pairs.qrels()
    run = top_k_run(pairs.unique_queries, pairs.unique_docs if corpus is None else corpus, corpus_scores)
    return {**retrieval_metrics(run, qrels),
            **{f"rerank_{k}": v for k, v in retrieval_metrics(rerank_run(pairs, pair_scores), qrels).items()
               if k.startswith("ndcg")},
            **pair_metrics(pair_scores, pairs.levels, thresholds)}
