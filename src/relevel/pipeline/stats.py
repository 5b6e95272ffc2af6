"""Statistics of the prepared splits, kept in the step's manifest for the summary and the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from relevel.data.scale import LevelScale
from relevel.data.schema import Document, LabeledPair
from relevel.data.stats import document_stats, pair_stats
from relevel.pipeline.io import read_records
from relevel.pipeline.step import Step, StepContext, StepResult, Work

PAIR_SPLITS = ("train", "dev")


@dataclass(kw_only=True)
class DataStats(Step):
    optional_inputs: ClassVar[tuple[str, ...]] = ("train", "dev", "unlabeled")
    SECONDS_PER_ITEM: ClassVar[float] = 2e-5

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        return Work(sum(sizes.values()))

    scale: LevelScale

    def run(self, ctx: StepContext) -> StepResult:
        stats = {}
        for split, folder in ctx.inputs.items():
            if split in PAIR_SPLITS:
                stats[split] = pair_stats((LabeledPair(**r) for r in read_records(folder)), self.scale)
            else:
                stats[split] = document_stats(Document(**r) for r in read_records(folder))
        return StepResult(metrics=stats)
