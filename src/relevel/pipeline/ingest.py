"""Read and validate the input splits, then keep evaluation data out of everything that trains."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from relevel.data.readers import count_lines, detect_format
from relevel.data.scale import LevelScale
from relevel.data.schema import Document, LabeledPair, normalize_text
from relevel.data.validation import DatasetSpec, OnError, RecordKind, RecordReader, Reject
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.rewrite import row_from_record
from relevel.pipeline.step import INPUT_FILE, RecordStep, StepContext, Work


@dataclass(kw_only=True)
class IngestSplit(RecordStep):
    """Validates one input file into typed records (`records`) and, with on_error='reject', `rejects`."""

    optional_inputs: ClassVar[tuple[str, ...]] = ("rows",)  # from a content rewrite of `path`
    outputs: ClassVar[tuple[str, ...]] = ("records", "rejects")
    uses_engine: ClassVar[bool] = False  # the reading is the work, and it happens in `items`
    SECONDS_PER_ITEM: ClassVar[float] = 7e-5

    path: Path = field(metadata=INPUT_FILE)
    kind: RecordKind
    scope: str  # record ids become "<scope>:<id>"
    spec: DatasetSpec
    scale: LevelScale
    on_error: OnError = "fail"

    def items(self, ctx: StepContext) -> Iterator[LabeledPair | Document | Reject]:
        self._reader = RecordReader(self.spec, self.scale, self.kind, self.scope, self.on_error)
        if "rows" in ctx.inputs:  # the file's rows as the content rewrite left them
            return self._reader.read_rows(row_from_record(self.path, r) for r in read_records(ctx.inputs["rows"]))
        return self._reader.read(self.path)

    def process(self, batch: list[LabeledPair | Document | Reject]) -> dict[str, list[dict]]:
        return {
            "records": [r.model_dump() for r in batch if not isinstance(r, Reject)],
            "rejects": [r.to_dict() for r in batch if isinstance(r, Reject)],
        }

    def total(self, ctx: StepContext | None) -> int | None:
        if detect_format(self.path, self.spec.format) == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return count_lines(self.path)

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        lines = self.total(None) if self.path.is_file() else None
        return Work(lines, {"records": lines}) if lines is not None else None

    def metrics(self, ctx: StepContext, outputs: ChunkedOutputs) -> dict[str, Any]:
        return self._reader.report.to_dict()  # items() made it; the reader counts while it reads


@dataclass(kw_only=True)
class HoldOutEvaluation(RecordStep):
    """Removes training pairs and unlabelled documents whose normalised query or document also occurs in
    the evaluation split, so evaluation data never trains anything; every removal is kept with its reason."""

    inputs: ClassVar[tuple[str, ...]] = ("train", "eval")
    optional_inputs: ClassVar[tuple[str, ...]] = ("unlabeled",)
    outputs: ClassVar[tuple[str, ...]] = ("train", "unlabeled", "removed")
    SECONDS_PER_ITEM: ClassVar[float] = 4e-5

    def estimate(self, sizes: dict[str, int]) -> Work | None:  # removals are few: sizes pass through
        return Work(sum(sizes.values()), {k: v for k, v in sizes.items() if k in self.outputs})
    uses_engine: ClassVar[bool] = False  # set lookups: cheaper here than the trip to an actor

    def items(self, ctx: StepContext) -> Iterable[tuple[str, dict]]:
        eval_records = list(read_records(ctx.inputs["eval"]))
        self._eval_queries = {normalize_text(r["query"]) for r in eval_records}
        self._eval_docs = {r["doc_id"] for r in eval_records}
        yield from (("train", r) for r in read_records(ctx.inputs["train"]))
        if "unlabeled" in ctx.inputs:
            yield from (("unlabeled", r) for r in read_records(ctx.inputs["unlabeled"]))

    def process(self, batch: list[tuple[str, dict]]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {"train": [], "unlabeled": [], "removed": []}
        for split, record in batch:
            reasons = []
            if split == "train" and normalize_text(record["query"]) in self._eval_queries:
                reasons.append("query in evaluation split")
            if record.get("doc_id", record["id"]) in self._eval_docs:
                reasons.append("document in evaluation split")
            if reasons:
                out["removed"].append({"split": split, "id": record["id"], "reason": " and ".join(reasons)})
            else:
                out[split].append(record)
        return out

    def metrics(self, ctx: StepContext, outputs: ChunkedOutputs) -> dict[str, Any]:
        removed = Counter((r["split"], r["reason"]) for r in read_records(outputs.dirs["removed"]))
        return {"removed": {f"{split}: {reason}": count for (split, reason), count in sorted(removed.items())}}
