"""Train the judge on the training pairs (tuned on a query-disjoint slice of them), then evaluate it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.data.splits import split_by_query
from relevel.eval.classification import classification_metrics, expected_calibration_error
from relevel.models.judge import Judge, create_judge, load_judge
from relevel.models.judge.base import softmax
from relevel.models.judge.config import JudgeConfig
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.step import RUNTIME, RecordStep, Step, StepContext, StepResult


@dataclass(kw_only=True)
class TrainJudge(Step):
    """Fits the judge; early stopping and temperature calibration use a query-disjoint tune slice of train."""

    inputs: ClassVar[tuple[str, ...]] = ("train",)
    outputs: ClassVar[tuple[str, ...]] = ("model",)

    scale: LevelScale
    config: JudgeConfig

    def run(self, ctx: StepContext) -> StepResult:
        pairs = [LabeledPair(**r) for r in read_records(ctx.inputs["train"])]
        fit, tune = split_by_query(pairs, self.config.tune_fraction, self.config.seed)
        judge = create_judge(self.scale, self.config)
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
    """The judge's level and probabilities for every pair; with labelled pairs, also the metrics."""

    inputs: ClassVar[tuple[str, ...]] = ("judge", "pairs")
    outputs: ClassVar[tuple[str, ...]] = ("predictions",)

    scale: LevelScale
    batch_size: int = field(default=64, metadata=RUNTIME)

    def items(self, ctx: StepContext):
        self._judge: Judge | None = None
        self._judge_dir = ctx.inputs["judge"]
        return read_records(ctx.inputs["pairs"])

    def total(self, ctx: StepContext) -> int | None:
        return sum(1 for _ in read_records(ctx.inputs["pairs"]))

    def process(self, batch: list[dict]) -> dict[str, list[dict]]:
        if self._judge is None:  # loaded on the first chunk that needs work: a fully resumed step skips it
            self._judge = load_judge(self._judge_dir)
        prediction = self._judge.predict([r["query"] for r in batch], [r["doc"] for r in batch], self.batch_size)
        return {"predictions": [
            {"id": r["id"], "level": int(level), "probs": [round(float(p), 5) for p in probs],
             **({"label": r["level"]} if "level" in r else {})}
            for r, level, probs in zip(batch, prediction.levels, prediction.probs)]}

    def metrics(self, ctx: StepContext, outputs: ChunkedOutputs) -> dict[str, Any]:
        rows = [r for r in read_records(outputs.dirs["predictions"]) if "label" in r]
        if not rows:
            return {}
        labels = np.array([r["label"] for r in rows])
        probs = np.array([r["probs"] for r in rows])
        return classification_metrics(labels, probs.argmax(axis=1), self.scale, probs)
