"""Where a record step's chunks are processed: in this process, or on a Ray cluster.

Either way the driver (this process) owns the step folder: it replays `items`, skips committed chunks and
commits each finished chunk atomically, so cache, resume and manifests are the same for both engines and a
killed driver loses at most the chunks in flight. Ray only moves `process` into actors, which load their
model once and keep it for every chunk they are given.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from relevel.config import EngineConfig, RayConfig
from relevel.errors import RelevelError

if TYPE_CHECKING:
    from relevel.pipeline.step import RecordStep

Chunk = tuple[int, list[Any]]  # (chunk index, items)
ChunkOutputs = dict[str, list[dict]]
# (worker, chunks that worker has processed, the step's `usage()` in that worker so far): the driver keeps each
# worker's most advanced snapshot (results may arrive out of order) and adds them up
UsageSnapshot = tuple[str, int, dict[str, Any]]


class Engine(ABC):
    @abstractmethod
    def map_chunks(self, step: RecordStep, chunks: Iterable[Chunk]
                   ) -> Iterator[tuple[int, ChunkOutputs, UsageSnapshot]]:
        """`step.process` over each chunk; results may come back in any order."""


class LocalEngine(Engine):
    def map_chunks(self, step: RecordStep, chunks: Iterable[Chunk]
                   ) -> Iterator[tuple[int, ChunkOutputs, UsageSnapshot]]:
        for done, (index, batch) in enumerate(chunks, start=1):
            yield index, step.process(batch), ("local", done, step.usage())


class _ChunkWorker:
    """A Ray Data actor: one copy of the step (and so of its lazily loaded model) for all its chunks."""

    def __init__(self, step_bytes: bytes, threads: int, encoder_runtime: str):
        import torch

        from relevel.models.encoder import use_runtime

        torch.set_num_threads(max(1, threads))
        use_runtime(encoder_runtime)  # a process-wide choice: each actor makes it as the driver did
        self.step = pickle.loads(step_bytes)
        self.worker, self.done = uuid.uuid4().hex, 0

    def __call__(self, rows: dict[str, Any]) -> dict[str, list]:
        outputs = [pickle.dumps(self.step.process(pickle.loads(payload))) for payload in rows["payload"]]
        self.done += len(outputs)
        usage = pickle.dumps((self.worker, self.done, self.step.usage()))
        return {"index": list(rows["index"]), "outputs": outputs, "usage": [usage] * len(outputs)}


class RayEngine(Engine):
    """Each step's pending chunks as a Ray Data pipeline: chunks → `map_batches` over an actor pool."""

    def __init__(self, config: RayConfig):
        self.config = config

    def connect(self) -> Any:
        try:
            import ray
        except ImportError as error:
            raise RelevelError("runtime.engine is 'ray' but Ray is not installed: pip install 'relevel[ray]'") \
                from error
        if not ray.is_initialized():
            address = self.config.address or os.environ.get("RAY_ADDRESS")
            if address:
                check_reachable(address)
            ray.init(address=address, num_cpus=None if address else self.config.local_cpus,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the step has its own bar
            context.print_on_execution_start = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": we know
        return ray

    def map_chunks(self, step: RecordStep, chunks: Iterable[Chunk]
                   ) -> Iterator[tuple[int, ChunkOutputs, UsageSnapshot]]:
        # Items are pickled by us, not converted to Arrow: they are any Python objects (typed records,
        # rejects) and must reach `process` unchanged. Only pending chunks travel; they are held in Ray's
        # object store, which spills to disk past its memory share.
        rows = [{"index": index, "payload": pickle.dumps(batch)} for index, batch in chunks]
        if not rows:
            return
        from relevel.models.encoder import active_runtime  # torch-heavy: imported where a model will run

        ray = self.connect()
        config = self.config
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ChunkWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(config.actors, len(rows))),
            num_cpus=config.num_cpus_per_actor, num_gpus=config.num_gpus_per_actor or None,
            fn_constructor_kwargs={"step_bytes": pickle.dumps(step), "threads": int(config.num_cpus_per_actor),
                                   "encoder_runtime": active_runtime()})
        for row in dataset.iter_rows():
            yield int(row["index"]), pickle.loads(row["outputs"]), pickle.loads(row["usage"])


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Ray retries an unreachable head for many minutes, silently; a plain host:port is checked first."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # 'auto', 'ray://…': Ray resolves these itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise RelevelError(f"Ray cluster at {address} (runtime.engine.ray.address or RAY_ADDRESS) is not "
                           f"reachable: {error.strerror or error}. Start it with `ray start --head`, or unset "
                           "the address to run on a local Ray instance.") from error


def create_engine(config: EngineConfig) -> Engine:
    return RayEngine(config.ray) if config.kind == "ray" else LocalEngine()
