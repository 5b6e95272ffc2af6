"""Descriptive statistics of a labelled split or a document pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import Document, LabeledPair, normalize_text

PERCENTILES = (50, 90, 99, 100)


def length_percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {f"p{p}": 0 for p in PERCENTILES}
    values = np.percentile(np.asarray(lengths), PERCENTILES, method="nearest")
    return {f"p{p}": int(v) for p, v in zip(PERCENTILES, values)}


def _per_key(counts: Counter) -> dict[str, float]:
    sizes = list(counts.values())
    return {
        "mean": round(float(np.mean(sizes)), 3) if sizes else 0.0,
        "max": max(sizes, default=0),
        "share_with_2_or_more": round(sum(s >= 2 for s in sizes) / len(sizes), 4) if sizes else 0.0,
    }


def pair_stats(pairs: Iterable[LabeledPair], scale: LevelScale) -> dict:
    levels: Counter = Counter()
    per_query: Counter = Counter()
    per_doc: Counter = Counter()
    pair_keys: Counter = Counter()
    query_lengths, doc_lengths = [], []
    for pair in pairs:
        query = normalize_text(pair.query)
        levels[pair.level] += 1
        per_query[query] += 1
        per_doc[pair.doc_id] += 1
        pair_keys[(query, pair.doc_id, pair.level)] += 1
        query_lengths.append(len(pair.query))
        doc_lengths.append(len(pair.doc))
    total = sum(levels.values())
    return {
        "pairs": total,
        "levels": {scale.name_of(level): {"level": level, "count": levels[level],
                                          "share": round(levels[level] / total, 4) if total else 0.0}
                   for level in range(scale.num_levels)},
        "distinct_queries": len(per_query),
        "distinct_documents": len(per_doc),
        "pairs_per_query": _per_key(per_query),
        "pairs_per_document": _per_key(per_doc),
        # The SSRA paper's measure: share of pairs whose query is a repeat of another pair's query.
        "duplicate_query_rate": round(1 - len(per_query) / total, 4) if total else 0.0,
        "exact_duplicate_pairs": sum(c - 1 for c in pair_keys.values()),
        "query_chars": length_percentiles(query_lengths),
        "document_chars": length_percentiles(doc_lengths),
    }


def document_stats(documents: Iterable[Document]) -> dict:
    ids: Counter = Counter()
    lengths = []
    for document in documents:
        ids[document.id] += 1
        lengths.append(len(document.text))
    return {
        "documents": sum(ids.values()),
        "distinct_documents": len(ids),
        "duplicate_documents": sum(c - 1 for c in ids.values()),
        "document_chars": length_percentiles(lengths),
    }
