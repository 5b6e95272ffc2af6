"""Level classification metrics for a judge: accuracy, macro-F1, per-level P/R/F1, confusion, QWK, ECE."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from relevel.data.scale import LevelScale
from relevel.eval.report import Table


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (scikit-learn has reliability curves, not ECE)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def classification_metrics(labels: np.ndarray, predicted: np.ndarray, scale: LevelScale,
                           probs: np.ndarray | None = None) -> dict:
    levels = list(range(scale.num_levels))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=levels, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=levels, average="macro", zero_division=0)),
        "quadratic_kappa": float(cohen_kappa_score(labels, predicted, labels=levels, weights="quadratic")),
        "per_level": {scale.name_of(level): {"level": level, "precision": float(precision[level]),
                                             "recall": float(recall[level]), "f1": float(f1[level]),
                                             "support": int(support[level])} for level in levels},
        "confusion": confusion_matrix(labels, predicted, labels=levels).tolist(),
        "majority_rate": float(np.bincount(labels, minlength=len(levels)).max() / len(labels)),
    }
    if probs is not None:
        metrics["ece"] = expected_calibration_error(probs, labels)
    return metrics


def classification_tables(metrics: dict, scale: LevelScale, title: str) -> list[Table]:
    summary = [["accuracy", metrics["accuracy"]], ["macro-F1", metrics["macro_f1"]],
               ["quadratic weighted kappa", metrics["quadratic_kappa"]],
               ["majority-class rate", metrics["majority_rate"]]]
    if "ece" in metrics:
        summary.append(["expected calibration error", metrics["ece"]])
    per_level = [[info["level"], name, info["precision"], info["recall"], info["f1"], info["support"]]
                 for name, info in metrics["per_level"].items()]
    names = [scale.name_of(level) for level in range(scale.num_levels)]
    confusion = [[f"true {name}", *row] for name, row in zip(names, metrics["confusion"])]
    return [Table(title, ["metric", "value"], summary),
            Table("Per level", ["level", "name", "precision", "recall", "F1", "support"], per_level),
            Table("Confusion (rows true, columns predicted)", ["", *names], confusion)]
