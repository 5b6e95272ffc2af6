"""Query-disjoint splits: the slice of train that tunes early stopping, calibration and thresholds
(the evaluation split is for reporting only)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from relevel.data.schema import LabeledPair, normalize_text


def in_tune_slice(key: str, fraction: float, seed: int) -> bool:
    """Deterministic per normalised key (a query, a document), so every pair of it lands on the same side."""
    digest = hashlib.sha256(f"{seed}:{normalize_text(key)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _split(pairs: Sequence[LabeledPair], fraction: float, seed: int, by: str
           ) -> tuple[list[LabeledPair], list[LabeledPair]]:
    if not 0 < fraction < 1:
        raise ValueError(f"tune fraction must be in (0, 1), got {fraction}")
    fit, tune = [], []
    for pair in pairs:
        (tune if in_tune_slice(getattr(pair, by), fraction, seed) else fit).append(pair)
    return fit, tune


def split_by_query(pairs: Sequence[LabeledPair], fraction: float, seed: int = 0
                   ) -> tuple[list[LabeledPair], list[LabeledPair]]:
    """(fit, tune): about `fraction` of the queries, with all their pairs, go to tune."""
    return _split(pairs, fraction, seed, "query")


def split_by_document(pairs: Sequence[LabeledPair], fraction: float, seed: int = 0
                      ) -> tuple[list[LabeledPair], list[LabeledPair]]:
    """(fit, tune): about `fraction` of the documents, with all their queries, go to tune (a generator is
    judged on documents it has not seen)."""
    return _split(pairs, fraction, seed, "doc_id")


def cap_levels(pairs: Sequence[LabeledPair], ratio: float, seed: int = 0) -> list[LabeledPair]:
    """At most `ratio` × (the rarest level's count) pairs per level, drawn at random, order kept: judged
    links pile up at the easy levels (random queries are irrelevant), which would drown the rare ones."""
    by_level: dict[int, list[int]] = {}
    for index, pair in enumerate(pairs):
        by_level.setdefault(pair.level, []).append(index)
    cap = int(ratio * min(len(indices) for indices in by_level.values()))
    rng = random.Random(seed)
    keep = sorted(i for indices in by_level.values()
                  for i in (rng.sample(indices, cap) if len(indices) > cap else indices))
    return [pairs[i] for i in keep]
