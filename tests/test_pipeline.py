"""Run framework plumbing with small dummy steps: plan checks, cache keys, cache hits, resume."""

import json
import time
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from relevel.errors import RelevelError
from relevel.pipeline.io import read_records
from relevel.pipeline.runner import Pipeline, read_manifest
from relevel.pipeline.step import INPUT_FILE, RUNTIME, RecordStep


@dataclass(kw_only=True)
class Numbers(RecordStep):
    """Emits n numbers; `calls` counts process() calls across instances of a test."""

    outputs: ClassVar[tuple[str, ...]] = ("numbers",)
    n: int
    batch_size: int = field(default=8, metadata=RUNTIME)
    calls: list = field(default_factory=list, metadata=RUNTIME)
    interrupt_at: int | None = field(default=None, metadata=RUNTIME)  # raise on the chunk starting here

    def items(self, ctx):
        return range(self.n)

    def process(self, batch):
        if batch[0] == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append(batch[0])
        return {"numbers": [{"id": i, "value": i * i} for i in batch]}


@dataclass(kw_only=True)
class Sum(RecordStep):
    inputs: ClassVar[tuple[str, ...]] = ("numbers",)
    outputs: ClassVar[tuple[str, ...]] = ("total",)
    offset: int = 0

    def items(self, ctx):
        return [sum(r["value"] for r in read_records(ctx.inputs["numbers"]))]

    def process(self, batch):
        return {"total": [{"total": batch[0] + self.offset}]}


@dataclass(kw_only=True)
class ReadsFile(RecordStep):
    outputs: ClassVar[tuple[str, ...]] = ("lines",)
    path: object = field(metadata=INPUT_FILE)

    def items(self, ctx):
        return self.path.read_text().splitlines()

    def process(self, batch):
        return {"lines": [{"line": line} for line in batch]}


def pipeline(tmp_path, *steps, chunk_size=10):
    return Pipeline(list(steps), tmp_path / "run", chunk_size=chunk_size, progress=False)


def test_plan_is_checked_before_any_work(tmp_path):
    with pytest.raises(RelevelError, match="input 'numbers' is not bound"):
        pipeline(tmp_path, Sum(name="sum"))
    with pytest.raises(RelevelError, match="not an output of an earlier step; available: \\['a/numbers'\\]"):
        pipeline(tmp_path, Numbers(name="a", n=3), Sum(name="sum", bind={"numbers": "b/numbers"}))
    with pytest.raises(RelevelError, match="has no input 'nums'"):
        pipeline(tmp_path, Numbers(name="a", n=3), Sum(name="sum", bind={"nums": "a/numbers", "numbers": "a/numbers"}))
    with pytest.raises(RelevelError, match="used twice"):
        pipeline(tmp_path, Numbers(name="a", n=3), Numbers(name="a", n=4))
    with pytest.raises(RelevelError, match="lower-case"):
        pipeline(tmp_path, Numbers(name="../a", n=3))


def test_second_run_is_a_cache_hit_and_does_no_work(tmp_path):
    calls: list = []
    steps = [Numbers(name="numbers", n=25, calls=calls), Sum(name="sum", bind={"numbers": "numbers/numbers"})]
    first = pipeline(tmp_path, *steps).run()
    assert [o.status for o in first] == ["run", "run"] and len(calls) == 3
    assert list(read_records(tmp_path / "run" / "sum" / "total")) == [{"total": sum(i * i for i in range(25))}]
    start = time.perf_counter()
    second = pipeline(tmp_path, *steps).run()
    assert time.perf_counter() - start < 0.5
    assert [o.status for o in second] == ["cached", "cached"] and len(calls) == 3
    manifest = read_manifest(tmp_path / "run" / "numbers")
    assert manifest["status"] == "done" and manifest["counts"] == {"numbers": 25} and manifest["chunk_size"] == 10
    assert manifest["identity"] == {"n": 25} and manifest["package_version"]


def test_key_follows_identity_and_upstream_not_runtime(tmp_path):
    def keys(n=25, batch_size=8, offset=0, chunk_size=10):
        steps = [Numbers(name="numbers", n=n, batch_size=batch_size),
                 Sum(name="sum", bind={"numbers": "numbers/numbers"}, offset=offset)]
        return [p.key for p in pipeline(tmp_path, *steps, chunk_size=chunk_size).plan()]

    base = keys()
    assert keys(batch_size=64) == base and keys(chunk_size=3) == base
    assert keys(offset=1)[0] == base[0] and keys(offset=1)[1] != base[1]
    assert all(a != b for a, b in zip(keys(n=26), base))  # a change upstream invalidates downstream


def test_input_files_are_keyed_by_content_not_path(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x\ny\n")
    b.write_text("x\ny\n")
    key_a = pipeline(tmp_path, ReadsFile(name="read", path=a)).plan()[0].key
    assert pipeline(tmp_path, ReadsFile(name="read", path=b)).plan()[0].key == key_a
    b.write_text("x\nz\n")
    assert pipeline(tmp_path, ReadsFile(name="read", path=b)).plan()[0].key != key_a


def test_changed_parameters_rerun_and_replace_stale_outputs(tmp_path):
    pipeline(tmp_path, Numbers(name="numbers", n=25)).run()
    [outcome] = pipeline(tmp_path, Numbers(name="numbers", n=5)).run()
    assert outcome.status == "run"
    assert [r["id"] for r in read_records(tmp_path / "run" / "numbers" / "numbers")] == list(range(5))


def test_interrupted_step_resumes_from_committed_chunks(tmp_path):
    calls: list = []
    with pytest.raises(KeyboardInterrupt):
        pipeline(tmp_path, Numbers(name="numbers", n=25, calls=calls, interrupt_at=20)).run()
    assert read_manifest(tmp_path / "run" / "numbers")["status"] == "running" and calls == [0, 10]
    # A different chunk size on resume must not shift chunk boundaries: the manifest's one is kept.
    [outcome] = pipeline(tmp_path, Numbers(name="numbers", n=25, calls=calls), chunk_size=4).run()
    assert outcome.status == "resume" and calls == [0, 10, 20]
    assert outcome.manifest["metrics"]["items_resumed"] == 20 and outcome.manifest["resumes"] == 1
    ids = [r["id"] for r in read_records(tmp_path / "run" / "numbers" / "numbers")]
    assert ids == list(range(25))
    assert json.loads((tmp_path / "run" / "numbers" / "manifest.json").read_text())["status"] == "done"


def test_evaluations_are_not_redone_when_only_a_training_setting_changes():
    from relevel.config import load_config
    from relevel.pipeline.run import experiment_steps

    demo = load_config("builtin:demo/demo.yaml")

    def identities(**embedder):
        config = demo.model_copy(update={"embedder": demo.embedder.model_copy(update=embedder)})
        steps = experiment_steps(config, {"train": "holdout/train", "unlabeled": "holdout/unlabeled"})
        return {step.name: step.identity() for step in steps}

    base, faster = identities(), identities(learning_rate=1e-3)
    changed = {name for name in base if base[name] != faster[name]}
    assert changed and all(name.startswith("embed-") for name in changed)  # the trainings, not the evaluations
    assert identities(max_seq_length=32)["eval-zero-shot"] != base["eval-zero-shot"]
