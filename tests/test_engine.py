"""The Ray engine: record steps as Ray Data pipelines on a local Ray instance give the local engine's records,
and a driver killed mid-step resumes from the chunks it had committed."""

import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import relevel_cli, sigkill_when_file_appears
from relevel.config import EngineConfig, RuntimeConfig
from relevel.errors import RelevelError
from relevel.pipeline.engine import LocalEngine, RayEngine, create_engine
from relevel.pipeline.io import read_records
from relevel.pipeline.runner import Pipeline, pipeline_for, read_manifest
from relevel.pipeline.step import RecordStep

RAY_RUNTIME = """
  engine:
    kind: ray
    ray: {actors: 2, num_cpus_per_actor: 1, local_cpus: 2}
"""
RECORD_STEPS = ("reannotate", "synthesize-r1", "judge-r1")  # annotate, generate and judge


def by_id(folder):
    return {r["id"]: r for r in read_records(folder)}


def test_ray_engine_matches_local_and_resumes_after_the_driver_is_killed(demo_dir, tmp_path):
    demo_config = resources.files("relevel").joinpath("demo/demo.yaml").read_text(encoding="utf-8")
    assert "\nruntime:\n" in demo_config
    config = tmp_path / "ray.yaml"
    config.write_text(demo_config.replace("\nruntime:\n", "\nruntime:" + RAY_RUNTIME), encoding="utf-8")
    local_run, run_dir = demo_dir / "relevel-demo", tmp_path / "run"
    shutil.copytree(local_run, run_dir)
    for step in RECORD_STEPS:  # their upstream and downstream stay cached: the engine is not in any key
        shutil.rmtree(run_dir / step)

    args = ["run", "--config", str(config), "--out", str(run_dir), "--until", RECORD_STEPS[-1]]
    marker = run_dir / "reannotate" / "predictions" / "chunk-00003.jsonl"
    sigkill_when_file_appears(marker, *args)
    assert marker.exists(), "the Ray run never committed a chunk"
    assert read_manifest(run_dir / "reannotate")["status"] == "running", "not killed mid-step"
    # Ray returns chunks in any order: whatever was committed at the kill, and only that, is resumed
    committed = sum(1 for _ in read_records(run_dir / "reannotate" / "predictions"))

    resumed = relevel_cli(*args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    annotate = read_manifest(run_dir / "reannotate")
    assert annotate["status"] == "done" and annotate["resumes"] == 1
    assert annotate["metrics"]["items_resumed"] == committed >= annotate["chunk_size"]

    for step, output in zip(RECORD_STEPS, ("predictions", "candidates", "predictions")):
        assert read_manifest(run_dir / step)["key"] == read_manifest(local_run / step)["key"]
        ray_records, local_records = by_id(run_dir / step / output), by_id(local_run / step / output)
        assert sum(1 for _ in read_records(run_dir / step / output)) == len(ray_records), f"{step}: duplicates"
        assert ray_records.keys() == local_records.keys(), step
        field = "query" if output == "candidates" else "level"
        assert {i: r[field] for i, r in ray_records.items()} == {i: r[field] for i, r in local_records.items()}


def test_engine_setting_and_missing_cluster_errors(monkeypatch):
    assert type(create_engine(EngineConfig())).__name__ == "LocalEngine"
    engine = create_engine(EngineConfig.model_validate({"kind": "ray", "ray": {"address": "127.0.0.1:1"}}))
    assert isinstance(engine, RayEngine)
    with pytest.raises(RelevelError, match="127.0.0.1:1"):
        engine.connect()
    with pytest.raises(ValueError, match="kind"):
        EngineConfig.model_validate({"kind": "spark"})


@dataclass(kw_only=True)
class CountingStep(RecordStep):
    """Reports one request (and one retry per chunk) for each item it processed, as an LLM backend's client
    counts them in the process that runs it."""

    outputs: ClassVar[tuple[str, ...]] = ("records",)

    def items(self, ctx):
        self._processed, self._chunks = 0, 0
        return range(40)

    def process(self, batch):
        self._processed += len(batch)
        self._chunks += 1
        return {"records": [{"id": f"r{i}"} for i in batch]}

    def usage(self):
        return {"requests": self._processed, "answers": self._processed, "retries": {"429": self._chunks}}


def test_llm_usage_of_every_ray_worker_reaches_the_manifest(tmp_path, monkeypatch):
    import ray

    # the actors unpickle CountingStep by reference: they must import this module
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    try:
        for kind in ("local", "ray"):
            runtime = RuntimeConfig.model_validate({"chunk_size": 5, "progress": False, "engine": {
                "kind": kind, "ray": {"actors": 2, "num_cpus_per_actor": 1, "local_cpus": 2}}})
            pipeline_for([CountingStep(name="count")], tmp_path / kind, runtime).run()
            manifest = read_manifest(tmp_path / kind / "count")
            assert manifest["counts"]["records"] == 40
            usage = manifest["metrics"]["llm"]
            assert usage["requests"] == usage["answers"] == 40, kind  # summed over the workers, none twice
            assert usage["retries"] == {"429": 8}, kind
    finally:
        ray.shutdown()


class OutOfOrderEngine(LocalEngine):
    """One worker whose results arrive last chunk first, as Ray Data may deliver them."""

    def map_chunks(self, step, chunks):
        yield from reversed(list(super().map_chunks(step, chunks)))


def test_usage_counts_a_workers_latest_snapshot_whatever_order_results_arrive_in(tmp_path):
    Pipeline([CountingStep(name="count")], tmp_path, 5, False, OutOfOrderEngine()).run()
    usage = read_manifest(tmp_path / "count")["metrics"]["llm"]
    assert usage["requests"] == usage["answers"] == 40 and usage["retries"] == {"429": 8}
