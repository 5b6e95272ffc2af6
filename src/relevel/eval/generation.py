"""How well generated queries hit their target level, and how varied they are.

A level counts as controlled only if the generator's hit rate beats every trivial baseline (AMENDMENTS):
copy the document, cut it to a query's length, or draw a random training query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import normalize_text
from relevel.eval.report import Table


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct character n-grams over all n-grams (Li et al. 2016), on characters: Chinese has no spaces."""
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


# A span of two or more characters said twice in a row ("全国全国相声"): a decoder's degenerate loop. Real
# queries do it too, rarely (0.9% of QBQTC's training queries, e.g. "妻子的谎言5妻子的谎言52集").
REPEATED_SPAN = re.compile(r"(.{2,})\1")


def diversity(queries: Sequence[str], docs: Sequence[str], training_queries: set[str]) -> dict[str, float]:
    normalised = [normalize_text(q) for q in queries]
    total = max(1, len(queries))
    return {
        "queries": len(queries), "distinct_1": distinct_n(normalised, 1), "distinct_2": distinct_n(normalised, 2),
        "substring_of_document": round(sum(q in normalize_text(d) for q, d in zip(normalised, docs)) / total, 4),
        "identical_to_training_query": round(sum(q in training_queries for q in normalised) / total, 4),
        "repeated_span": round(sum(REPEATED_SPAN.search(q) is not None for q in normalised) / total, 4),
        "mean_chars": round(float(np.mean([len(q) for q in queries])) if queries else 0.0, 2),
    }


def control_accuracy(targets: Sequence[int], judged: Sequence[int], scale: LevelScale) -> dict[str, float]:
    """Per target level: the share of its queries that the judge put at that level."""
    targets, judged = np.asarray(targets), np.asarray(judged)
    return {scale.name_of(level): round(float((judged[targets == level] == level).mean()), 4)
            if (targets == level).any() else None for level in range(scale.num_levels)}


def control_tables(metrics: dict, scale: LevelScale) -> list[Table]:
    names = [level.name for level in scale.levels]
    baselines = list(metrics["baselines"])
    real = metrics.get("real_queries", {}).get("control", {})
    rows = [[name, metrics["generator"]["control"][name], *[metrics["baselines"][b]["control"][name]
                                                             for b in baselines],
             "yes" if metrics["controlled"][name] else "no", real.get(name, "")] for name in names]
    gen = metrics["generator"]["diversity"]
    return [
        Table("Control accuracy: share judged at the target level (held-out judge)",
              ["target level", "generator", *baselines, "beats every baseline",
               "reference: real queries at their human level"], rows),
        Table("Generated queries", ["distinct-1", "distinct-2", "substring of document", "identical to a "
                                    "training query", "repeated span", "mean characters", "queries"],
              [[gen["distinct_1"], gen["distinct_2"], gen["substring_of_document"],
                gen["identical_to_training_query"], gen.get("repeated_span"), gen["mean_chars"],
                gen["queries"]]]),
    ]
