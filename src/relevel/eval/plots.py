"""The report's figures (matplotlib, written as PNG next to the report)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def level_distribution(path: Path, names: list[str], real: dict[str, int], mixed: dict[str, int]) -> Path:
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [real[n] for n in names], 0.4, label="real")
    ax.bar(x + 0.2, [mixed[n] for n in names], 0.4, label="real + synthetic")
    ax.set_xticks(x, names)
    ax.set_ylabel("pairs")
    ax.set_title("Levels: real vs real + synthetic")
    ax.legend()
    return _save(fig, path)


def control_by_round(path: Path, names: list[str], by_round: dict[int, dict[str, float]]) -> Path:
    """`by_round[0]` is stage 1."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    rounds = sorted(by_round)
    for name in names:
        ax.plot(rounds, [by_round[r][name] for r in rounds], marker="o", label=name)
    ax.set_xticks(rounds, ["stage 1" if r == 0 else f"round {r}" for r in rounds])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share judged at target (held-out judge)")
    ax.set_title("Control accuracy")
    ax.legend()
    return _save(fig, path)


def metrics_by_variant(path: Path, metrics: list[str], rows: dict[str, dict[str, list[float]]]) -> Path:
    """`rows[variant][metric]`: one value per seed; bars show the mean, whiskers the spread."""
    variants = list(rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [rows[v].get(metric, []) for v in variants]
        ax.bar(range(len(variants)), [np.mean(v) if v else 0 for v in values],
               yerr=[np.std(v) if len(v) > 1 else 0 for v in values], capsize=3)
        ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right")
        low = min((min(v) for v in values if v), default=0)
        ax.set_ylim(max(0, low - 0.1), None)
        ax.set_title(metric)
    fig.tight_layout()
    return _save(fig, path)


def human_check(path: Path, names: list[str], precision: list[dict], confusion: list[list[int]]) -> Path:
    """Left: per-level precision of the synthetic labels with Wilson 95% whiskers (levels nobody reviewed
    are left empty); right: the judge-vs-human confusion matrix."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    x = np.arange(len(names))
    reviewed = [row for row in precision if row["reviewed"]]
    whiskers = [[row["precision"] - row["low"] for row in reviewed],
                [row["high"] - row["precision"] for row in reviewed]]
    left.bar([row["level"] for row in reviewed], [row["precision"] for row in reviewed], 0.6,
             yerr=np.clip(whiskers, 0, None), capsize=4)  # clip: rounding must not make a whisker negative
    left.set_xticks(x, [f"{name}\nn={row['reviewed']}" for name, row in zip(names, precision)])
    left.set_ylim(0, 1)
    left.set_ylabel("human level = target level")
    left.set_title("Precision of synthetic labels (95% Wilson)")
    counts = np.asarray(confusion)
    right.imshow(counts, cmap="Blues")
    for (judge, human), count in np.ndenumerate(counts):
        right.text(human, judge, count, ha="center", va="center",
                   color="white" if count > counts.max() / 2 else "black")
    right.set_xticks(x, names)
    right.set_yticks(x, names)
    right.set_xlabel("human level")
    right.set_ylabel("judge level")
    right.set_title("Judge vs human")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
