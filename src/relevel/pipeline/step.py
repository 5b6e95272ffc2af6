"""Steps: declared inputs and outputs, an identity that feeds the cache key, and a `run`.

A step is a dataclass. Its fields are its parameters: all of them feed the cache key except `name`,
`bind`, fields marked `RUNTIME` (batch size, threads: how, not what) and fields marked `INPUT_FILE`
(hashed by content instead, so moving a file does not invalidate the cache).
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from tqdm.auto import tqdm

from relevel.pipeline.engine import Engine, LocalEngine
from relevel.pipeline.io import ChunkedOutputs, batched

RUNTIME = {"runtime": True}
INPUT_FILE = {"input_file": True}


@dataclass(frozen=True)
class StepContext:
    """What a running step may touch: its own folder and its bound inputs."""

    step_dir: Path
    inputs: dict[str, Path]
    chunk_size: int
    progress: bool = True
    cache_dir: Path | None = None  # shared by the run's steps: frozen-encoder outputs (see models/encoder.py)
    engine: Engine = field(default_factory=LocalEngine)  # where a record step's chunks are processed


def encoder_store(ctx: StepContext) -> Path | None:
    return ctx.cache_dir / "encodings" if ctx.cache_dir is not None else None


@dataclass(frozen=True)
class StepResult:
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Work:
    """What a step is expected to do, for `relevel run --dry-run`: the items it handles (what its time scales
    with), the judge and generator calls among them, and its outputs' expected record counts, which size the
    steps after it."""

    items: int
    outputs: dict[str, int] = field(default_factory=dict)
    judge_calls: int = 0
    generated: int = 0  # queries written by the generator
    seconds: float | None = None  # a step whose cost per item depends on its settings projects its own time


@dataclass(kw_only=True)
class Step(ABC):
    """One unit of work in a run. Subclasses declare `inputs`/`outputs` and implement `run`."""

    VERSION: ClassVar[int] = 1
    inputs: ClassVar[tuple[str, ...]] = ()  # input slots that must be bound
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()  # output folders under the step's directory
    # Wall seconds per `Work.items` item, measured on the reference machine (2 CPU cores; the QBQTC run in
    # benchmarks/RESULTS.md): what a dry run projects time with.
    SECONDS_PER_ITEM: ClassVar[float] = 0.0

    name: str
    bind: dict[str, str] = field(default_factory=dict)  # input slot -> "step-name/output"

    @abstractmethod
    def run(self, ctx: StepContext) -> StepResult: ...

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        """Expected work, given the expected record count of each bound input slot (None: not estimated)."""
        return None

    def identity(self) -> dict[str, Any]:
        """Parameters that define the output (the cache key's part that comes from this step)."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("name", "bind") and not f.metadata.get("runtime") and not f.metadata.get("input_file")
        }

    def input_files(self) -> dict[str, Path]:
        return {f.name: Path(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.metadata.get("input_file") and getattr(self, f.name) is not None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", context={"cache_key": True})
    return json.loads(json.dumps(value, default=str))


@dataclass(kw_only=True)
class RecordStep(Step):
    """A step that maps a stream of items to record outputs, committed chunk by chunk.

    `items` must be deterministic and cheap (it is replayed in full on resume); the costly work belongs
    in `process`, which is skipped for chunks already committed and runs on the run's engine.
    """

    # False where `process` only formats records: shipping them to Ray actors would cost more than it saves
    uses_engine: ClassVar[bool] = True

    @abstractmethod
    def items(self, ctx: StepContext) -> Iterable[Any]: ...

    @abstractmethod
    def process(self, batch: list[Any]) -> dict[str, list[dict]]: ...

    def total(self, ctx: StepContext) -> int | None:
        """Number of items, for the progress bar, when cheap to know."""
        return None

    def metrics(self, ctx: StepContext, outputs: ChunkedOutputs) -> dict[str, Any]:
        """Metrics for the manifest once every chunk is committed."""
        return {}

    def usage(self) -> dict[str, Any]:
        """LLM requests and tokens of `process` so far in this process (`LLMStats.as_dict()`); the run adds up
        every engine worker's into the manifest's `llm`."""
        return {}

    def run(self, ctx: StepContext) -> StepResult:
        outputs = ChunkedOutputs(ctx.step_dir, self.outputs)
        sizes: dict[int, int] = {}
        resumed = 0
        with tqdm(total=self.total(ctx), desc=self.name, unit="rec", disable=not ctx.progress,
                  leave=False) as bar:

            def pending() -> Iterator[tuple[int, list[Any]]]:
                nonlocal resumed
                for index, batch in enumerate(batched(self.items(ctx), ctx.chunk_size)):
                    if outputs.is_committed(index):
                        resumed += len(batch)
                        bar.update(len(batch))
                    else:
                        sizes[index] = len(batch)
                        yield index, batch

            engine = ctx.engine if self.uses_engine else LocalEngine()
            usage_by_worker: dict[str, tuple[int, dict[str, Any]]] = {}
            for index, records, (worker, done, usage) in engine.map_chunks(self, pending()):
                outputs.commit(index, records)
                if done > usage_by_worker.get(worker, (0, {}))[0]:
                    usage_by_worker[worker] = done, usage
                bar.update(sizes.pop(index))
        metrics = {**self.metrics(ctx, outputs), "items_resumed": resumed}
        if any(usage for _, usage in usage_by_worker.values()):
            from relevel.models.llm.client import LLMStats

            metrics["llm"] = LLMStats.merged([usage for _, usage in usage_by_worker.values()])
        return StepResult(outputs.counts(), metrics)
