"""Paired per-query bootstrap of the difference between two systems (B − A) on the same evaluation pairs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr


def paired_bootstrap(queries: Sequence[str], levels: np.ndarray, scores_a: Sequence[np.ndarray],
                     scores_b: Sequence[np.ndarray], ndcg_a: dict[str, float], ndcg_b: dict[str, float],
                     resamples: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean difference and 95% interval of Spearman (pairs of the drawn queries; each system's Spearman
    averaged over its seeds' `scores_*`) and of NDCG@10 (per-query values, already seed-averaged), drawing
    queries with replacement so that both systems see the same draw."""
    pairs_of: dict[str, list[int]] = defaultdict(list)
    for i, query in enumerate(queries):
        pairs_of[query].append(i)
    unique = sorted(pairs_of)
    judged = np.array([q in ndcg_a and q in ndcg_b for q in unique])
    gain = np.array([ndcg_b.get(q, 0.0) - ndcg_a.get(q, 0.0) for q in unique])
    rng = np.random.default_rng(seed)

    def spearman_gap(index: np.ndarray) -> float:
        b = np.mean([spearmanr(s[index], levels[index]).statistic for s in scores_b])
        a = np.mean([spearmanr(s[index], levels[index]).statistic for s in scores_a])
        return float(b - a)

    spearman, ndcg = [], []
    for _ in range(resamples):
        drawn = rng.integers(0, len(unique), len(unique))
        spearman.append(spearman_gap(np.concatenate([pairs_of[unique[d]] for d in drawn])))
        drawn_judged = drawn[judged[drawn]]
        ndcg.append(float(gain[drawn_judged].mean()) if len(drawn_judged) else 0.0)
    return {
        "spearman": _summary(spearman_gap(np.arange(len(queries))), spearman),
        "ndcg@10": _summary(float(gain[judged].mean()), ndcg),
    }


def _summary(observed: float, draws: list[float]) -> dict[str, float]:
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (float("nan"), float("nan"))
    return {"difference": observed, "low": float(low), "high": float(high)}
