"""Judge metrics against hand-computed values, and the query-disjoint tune split."""

import numpy as np
import pytest

from relevel.data.scale import Level, LevelScale
from relevel.data.schema import LabeledPair
from relevel.data.splits import split_by_query
from relevel.eval.classification import classification_metrics, classification_tables, expected_calibration_error

SCALE = LevelScale(levels=[Level(value=v, name=n) for v, n in enumerate(["poor", "partial", "high"])])


def test_metrics_match_hand_computed_values():
    labels = np.array([0, 1, 1, 2, 2, 1])
    predicted = np.array([0, 1, 2, 2, 1, 1])
    m = classification_metrics(labels, predicted, SCALE)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per-level F1: poor 1, partial 2/3, high 1/2 -> macro 13/18
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert m["per_level"]["high"] == {"level": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["confusion"] == [[1, 0, 0], [0, 2, 1], [0, 1, 1]]
    assert m["majority_rate"] == 0.5 and "ece" not in m
    assert classification_metrics(labels, labels, SCALE)["quadratic_kappa"] == pytest.approx(1.0)
    titles = [t.title for t in classification_tables(m, SCALE, "Judge on dev")]
    assert titles == ["Judge on dev", "Per level", "Confusion (rows true, columns predicted)"]


def test_expected_calibration_error_by_hand():
    # two pairs at confidence 0.9 (one right), two at 0.6 (both right): 0.5*|0.5-0.9| + 0.5*|1-0.6| = 0.4
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    assert expected_calibration_error(np.eye(2)[[0, 1]], np.array([0, 1])) == pytest.approx(0.0)


def test_tune_split_is_query_disjoint_and_deterministic():
    pairs = [LabeledPair(id=f"t:{i}", query=f"查询 {i % 50}" + (" " if i % 2 else ""), doc_id=f"d{i}", doc="x",
                         level=i % 3) for i in range(500)]
    fit, tune = split_by_query(pairs, 0.2, seed=0)
    assert len(fit) + len(tune) == 500 and 0 < len(tune) < 250
    assert not {p.query.strip() for p in fit} & {p.query.strip() for p in tune}  # same normalised query, same side
    assert split_by_query(pairs, 0.2, seed=0) == (fit, tune)
    assert split_by_query(pairs, 0.2, seed=1) != (fit, tune)
    with pytest.raises(ValueError):
        split_by_query(pairs, 1.0)
