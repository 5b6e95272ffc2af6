"""Query-disjoint splits: the slice of train that tunes early stopping, calibration and thresholds
(the evaluation split is for reporting only)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from relevel.data.schema import LabeledPair, normalize_text


def in_tune_slice(query: str, fraction: float, seed: int) -> bool:
    """Deterministic per normalised query, so every pair of a query lands on the same side."""
    digest = hashlib.sha256(f"{seed}:{normalize_text(query)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_by_query(pairs: Sequence[LabeledPair], fraction: float, seed: int = 0
                   ) -> tuple[list[LabeledPair], list[LabeledPair]]:
    """(fit, tune): about `fraction` of the queries, with all their pairs, go to tune."""
    if not 0 < fraction < 1:
        raise ValueError(f"tune fraction must be in (0, 1), got {fraction}")
    fit, tune = [], []
    for pair in pairs:
        (tune if in_tune_slice(pair.query, fraction, seed) else fit).append(pair)
    return fit, tune
