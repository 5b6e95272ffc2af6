"""Agreement of human reviewers with machine labels: per-level precision with Wilson intervals, the judge-vs-human
confusion matrix and Cohen's weighted kappa. Pure functions over level lists; no files."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, confusion_matrix


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (sound at 0 or n successes, unlike the normal one); None when
    there are no trials."""
    if trials == 0:
        return None
    interval = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def precision_by_level(targets: Sequence[int], humans: Sequence[int], num_levels: int) -> list[dict]:
    """Per target level: how many reviewed pairs a human put at that same level, with a Wilson 95% interval.
    A level without reviewed pairs has precision and interval None."""
    targets, humans = np.asarray(targets, dtype=int), np.asarray(humans, dtype=int)
    rows = []
    for level in range(num_levels):
        at_level = targets == level
        reviewed, agree = int(at_level.sum()), int((humans[at_level] == level).sum())
        interval = wilson_interval(agree, reviewed)
        rows.append({"level": level, "reviewed": reviewed, "agree": agree,
                     "precision": agree / reviewed if reviewed else None,
                     "low": interval[0] if interval else None, "high": interval[1] if interval else None})
    return rows


def overall_precision(targets: Sequence[int], humans: Sequence[int]) -> dict:
    """Share of all reviewed pairs whose human level is the target, with a Wilson 95% interval."""
    reviewed = len(targets)
    agree = sum(int(t == h) for t, h in zip(targets, humans))
    interval = wilson_interval(agree, reviewed)
    return {"reviewed": reviewed, "agree": agree, "precision": agree / reviewed if reviewed else None,
            "low": interval[0] if interval else None, "high": interval[1] if interval else None}


def judge_confusion(judged: Sequence[int], humans: Sequence[int], num_levels: int) -> list[list[int]]:
    """Counts with the judge's level as the row and the human's as the column."""
    labels = list(range(num_levels))
    if not judged:
        return [[0] * num_levels for _ in labels]
    return confusion_matrix(judged, humans, labels=labels).tolist()


def weighted_kappa(judged: Sequence[int], humans: Sequence[int], num_levels: int) -> float | None:
    """Cohen's kappa with linear weights (a one-level miss costs half a two-level one on a 3-level scale).
    None when it is undefined: no pairs, or chance agreement is already perfect (both use one level)."""
    if not judged:
        return None
    with warnings.catch_warnings():  # the undefined case is reported as None, not as a warning
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        kappa = cohen_kappa_score(judged, humans, labels=list(range(num_levels)), weights="linear")
    return None if math.isnan(kappa) else float(kappa)
