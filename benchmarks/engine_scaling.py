"""Record steps on the local and the Ray engine at growing sizes: records/s and peak RSS of all processes.

    .venv/bin/python benchmarks/engine_scaling.py --run RUN [--judge-sizes 1000 10000 full]
                                                  [--generate-sizes 1000 3000] [--engines local ray]

An option given with no sizes skips that step.

RUN is a finished `relevel run` of QBQTC (configs/qbqtc.yaml): its judge, its last generator and its
prepared train / unlabeled records are reused, so only the step under test runs. Each measurement starts
with an empty encoder cache, so it pays for the encodings it needs, as a fresh run does. Ray's figures
include starting the local instance and its actors (the cost a run pays once per step).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import psutil
import torch
import yaml

from relevel.config import EngineConfig, RayConfig, RunConfig
from relevel.pipeline.engine import create_engine
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.judge import JudgePairs
from relevel.pipeline.step import RecordStep, StepContext
from relevel.pipeline.synthesize import GenerateCandidates

CHUNK = 500


class PeakRSS:
    """Peak of the summed resident memory of this process and every process it or Ray started."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s, self.peak, self._stop = interval_s, 0, threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            processes = [me, *me.children(recursive=True)]
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass  # exited between listing and reading
            self.peak = max(self.peak, total)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def slice_records(source: Path, size: int | None, folder: Path) -> Path:
    """The first `size` records of a chunked output as one input folder."""
    ChunkedOutputs(folder, ["records"]).write_all(
        {"records": [r for _, r in zip(range(size or 1 << 62), read_records(source))]}, CHUNK)
    return folder / "records"


def measure(step: RecordStep, inputs: dict[str, Path], engine: EngineConfig, work: Path) -> dict:
    step_dir = work / step.name
    shutil.rmtree(step_dir, ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    ctx = StepContext(step_dir=step_dir, inputs=inputs, chunk_size=CHUNK, progress=False,
                      cache_dir=work / "cache", engine=create_engine(engine))
    items = step.total(ctx)  # pairs judged, or (document, level) requests generated for
    with PeakRSS() as rss:
        start = time.perf_counter()
        result = step.run(ctx)
        seconds = time.perf_counter() - start
    return {"items": items, "outputs": sum(result.counts.values()), "seconds": round(seconds, 1),
            "items_per_s": round(items / seconds, 1), "peak_rss_mib": rss.peak // 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--judge-sizes", nargs="*", default=["1000", "10000", "full"])
    parser.add_argument("--generate-sizes", nargs="*", default=["1000", "3000"])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/engine_scaling.json"))
    args = parser.parse_args()
    run = args.run
    config = RunConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")))
    torch.set_num_threads(psutil.cpu_count())
    engines = {"local": EngineConfig(),
               "ray": EngineConfig(kind="ray", ray=RayConfig(actors=2, num_cpus_per_actor=1))}
    generator = max(run.glob("generator*/model"), key=lambda p: p.stat().st_mtime)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in args.judge_sizes:
            pairs = slice_records(run / "holdout" / "train", None if size == "full" else int(size),
                                  work / f"pairs-{size}")
            step = JudgePairs(name="judge", bind={"pairs": "x"}, model=run / "judge" / "model",
                              scale=config.scale, batch_size=config.runtime.inference_batch_size)
            for engine in args.engines:
                rows.append({"step": "judge", "size": size, "engine": engine,
                             **measure(step, {"pairs": pairs}, engines[engine], work)})
                print(json.dumps(rows[-1]), flush=True)
        for size in args.generate_sizes:
            synthesis = config.synthesis.model_copy(update={"documents_per_round": int(size),
                                                            "requests_per_document": 1})
            step = GenerateCandidates(name="generate", bind={}, scale=config.scale, config=synthesis, round=1)
            inputs = {"generator": generator, "documents": run / "holdout" / "unlabeled",
                      "train": run / "holdout" / "train"}
            for engine in args.engines:
                rows.append({"step": "generate", "size": size, "engine": engine,
                             **measure(step, inputs, engines[engine], work)})
                print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"date": str(date.today()), "machine": platform.processor() or
                                    platform.machine(), "cpus": psutil.cpu_count(), "rows": rows}, indent=2))
    print(f"\n{date.today()} · {psutil.cpu_count()} CPUs · chunk {CHUNK} · Ray: 2 actors × 1 CPU\n")
    print("| step | items | engine | wall s | items/s | peak RSS (all processes) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['step']} | {row['items']:,} | {row['engine']} | {row['seconds']} | "
              f"{row['items_per_s']} | {row['peak_rss_mib']:,} MiB |")


if __name__ == "__main__":
    main()
