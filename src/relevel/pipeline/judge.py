"""Train the judge on the training pairs (tuned on a query-disjoint slice of them), then evaluate it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.data.splits import in_tune_slice, split_by_query
from relevel.eval.classification import (
    classification_metrics,
    expected_calibration_error,
)
from relevel.models.judge import Judge, create_judge, load_judge
from relevel.models.judge.base import softmax
from relevel.models.judge.config import CPU_SECONDS_PER_JUDGED_PAIR, JudgeConfig
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.step import INPUT_FILE, RUNTIME, RecordStep, Step, StepContext, StepResult, Work, encoder_store

HALF_SEED = 7919  # any fixed seed other than the tune split's: the halves must not line up with tune


@dataclass(kw_only=True)
class TrainJudge(Step):
    """Fits the judge; early stopping and temperature calibration use a query-disjoint tune slice of train."""

    inputs: ClassVar[tuple[str, ...]] = ("train",)
    outputs: ClassVar[tuple[str, ...]] = ("model",)

    scale: LevelScale
    config: JudgeConfig
    # "held-out": train on one query-disjoint half only; the judge that scores control accuracy then never
    # saw the other half's queries (AMENDMENTS: a held-out judge, never used to filter).
    subset: Literal["all", "held-out"] = "all"

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        pairs = sizes.get("train")
        if pairs is None:
            return None
        pairs = pairs // 2 if self.subset == "held-out" else pairs
        return Work(pairs, seconds=self.config.cpu_training_seconds(pairs))

    def run(self, ctx: StepContext) -> StepResult:
        pairs = [LabeledPair(**r) for r in read_records(ctx.inputs["train"])]
        if self.subset == "held-out":
            pairs = [p for p in pairs if in_tune_slice(p.query, 0.5, HALF_SEED)]
        fit, tune = split_by_query(pairs, self.config.tune_fraction, self.config.seed)
        judge = create_judge(self.scale, self.config, encoder_store(ctx))
        report = judge.fit(fit, tune, progress=ctx.progress, work_dir=ctx.step_dir)
        judge.save(ctx.step_dir / "model")
        logits, labels = report.pop("tune_logits"), report.pop("tune_labels")
        tune_metrics = classification_metrics(labels, logits.argmax(axis=1), self.scale,
                                              softmax(logits, judge.temperature))
        tune_metrics["ece_uncalibrated"] = expected_calibration_error(softmax(logits), labels)
        return StepResult(counts={"fit_pairs": len(fit), "tune_pairs": len(tune)},
                          metrics={"fit": report, "tune": tune_metrics})


@dataclass(kw_only=True)
class JudgePairs(RecordStep):
    """The judge's level and probabilities for every pair; with labelled pairs, also the metrics.

    The judge comes from an earlier step (`judge` bound) or from a trained judge's folder (`model`)."""

    inputs: ClassVar[tuple[str, ...]] = ("pairs",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("judge",)
    outputs: ClassVar[tuple[str, ...]] = ("predictions",)

    scale: LevelScale
    model: Path | None = field(default=None, metadata=INPUT_FILE)
    batch_size: int = field(default=64, metadata=RUNTIME)
    # only for the dry run's projection (the judge's own config says it; see JudgeConfig.cpu_seconds_per_pair)
    seconds_per_pair: float = field(default=CPU_SECONDS_PER_JUDGED_PAIR["embedding-features"], metadata=RUNTIME)

    def __post_init__(self):
        if ("judge" in self.bind) == (self.model is not None):
            raise ValueError(f"step {self.name!r}: give the judge either as a bound input or as a model folder")

    def items(self, ctx: StepContext):
        self._judge: Judge | None = None
        self._judge_dir = ctx.inputs.get("judge") or self.model
        self._store = encoder_store(ctx)
        return read_records(ctx.inputs["pairs"])

    def total(self, ctx: StepContext) -> int | None:
        return sum(1 for _ in read_records(ctx.inputs["pairs"]))

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        pairs = sizes.get("pairs")
        if pairs is None:
            return None
        return Work(pairs, {"predictions": pairs}, judge_calls=pairs, seconds=pairs * self.seconds_per_pair)

    def process(self, batch: list[dict]) -> dict[str, list[dict]]:
        if self._judge is None:  # loaded on the first chunk that needs work: a fully resumed step skips it
            self._judge = load_judge(self._judge_dir, self._store)
        prediction = self._judge.predict([r["query"] for r in batch], [r["doc"] for r in batch], self.batch_size)
        return {"predictions": [
            {"id": r["id"], "query": r["query"], "doc_id": r["doc_id"], "level": int(level),
             "probs": [round(float(p), 5) for p in probs],
             **({"label": r["level"]} if "level" in r else {})}
            for r, level, probs in zip(batch, prediction.levels, prediction.probs)]}

    def usage(self) -> dict[str, Any]:
        return self._judge.usage() if self._judge is not None else {}

    def metrics(self, ctx: StepContext, outputs: ChunkedOutputs) -> dict[str, Any]:
        rows = [r for r in read_records(outputs.dirs["predictions"]) if "label" in r]
        if not rows:
            return {}
        labels = np.array([r["label"] for r in rows])
        probs = np.array([r["probs"] for r in rows])
        return classification_metrics(labels, probs.argmax(axis=1), self.scale, probs)
