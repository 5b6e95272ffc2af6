"""`relevel run` on a tiny slice, killed with SIGKILL at many points across all of its steps and resumed after
each kill, ends with what one uninterrupted run makes: the same records (same ids, none twice, same content),
the same model files, and manifests that are all done with the same keys. One of the interruptions is a
Ctrl-C, which must stop cleanly and say how to resume.

One run, killed again and again: each resume goes on from where the last kill left it, so the points cost one
run plus a process start each. The kill points are drawn (seeded) from the files the reference run wrote, in
the order it wrote them: a step starting, a chunk or model file appearing (a kill mid-step or mid-save), a step
finishing. The model is a randomly initialised tiny one (conftest.make_tiny_base): this checks plumbing only.
"""

from __future__ import annotations

import random
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import relevel_cli, relevel_popen, wait_for
from relevel.config import load_config
from relevel.pipeline.io import CHUNK_GLOB, read_records
from relevel.pipeline.run import make_pipeline
from relevel.pipeline.runner import MANIFEST, read_manifest

KILL_SEED = 11


@dataclass(frozen=True)
class KillPoint:
    """Kill when `step` has started or is done, or when the file `path` (inside the step folder) appears."""

    step: str
    path: str | None = None
    done: bool = False

    def reached(self, run_dir: Path) -> bool:
        if self.path is not None:
            return (run_dir / self.step / self.path).exists()
        manifest = read_manifest(run_dir / self.step)
        return manifest is not None and (not self.done or manifest["status"] == "done")

    def __str__(self) -> str:
        return f"{self.step}: " + (self.path or ("done" if self.done else "started"))


def candidate_points(reference: Path, steps: list[str]) -> list[KillPoint]:
    """Every point of the reference run, in the order it reached them."""
    points = []
    for step in steps:
        files = [f for f in (reference / step).rglob("*") if f.is_file() and f.name != MANIFEST]
        files.sort(key=lambda f: f.stat().st_mtime_ns)
        points += [KillPoint(step), *(KillPoint(step, str(f.relative_to(reference / step))) for f in files),
                   KillPoint(step, done=True)]
    return points


def draw_points(candidates: list[KillPoint], count: int, seed: int) -> list[KillPoint]:
    """One point drawn from each of `count` equal stretches of the run, so the kills spread over all of it."""
    rng = random.Random(seed)
    bounds = [round(i * len(candidates) / count) for i in range(count + 1)]
    return [candidates[rng.randrange(lo, hi)] for lo, hi in zip(bounds, bounds[1:])]


def where(run_dir: Path, steps: list[str]) -> str:
    """Where a run stands: the step in progress and how many files it has, or the last step done."""
    for step in steps:
        manifest = read_manifest(run_dir / step)
        if manifest is None:
            return f"between steps, before {step}"
        if manifest["status"] != "done":
            return f"in {step} with {sum(1 for f in (run_dir / step).rglob('*') if f.is_file())} files"
    return "after the last step"


def step_files(run_dir: Path, step: str) -> dict[str, bytes]:
    """The step's output files (chunks and models) but its manifest and the embedder's model card, which
    states the training's wall time."""
    return {str(f.relative_to(run_dir / step)): f.read_bytes() for f in sorted((run_dir / step).rglob("*"))
            if f.is_file() and f.name not in (MANIFEST, "README.md")}


def assert_same_outcome(run_dir: Path, reference: Path, steps: list[str]) -> None:
    for step in steps:
        manifest, expected = read_manifest(run_dir / step), read_manifest(reference / step)
        assert manifest["status"] == "done" and manifest["key"] == expected["key"], step
        assert manifest["counts"] == expected["counts"], step
        for output in sorted((reference / step).glob(f"*/{CHUNK_GLOB}")):
            records = list(read_records(run_dir / step / output.parent.name))
            ids = [r["id"] for r in records if "id" in r]
            assert len(ids) == len(set(ids)), f"{step}/{output.parent.name}: duplicated ids"
            assert records == list(read_records(output.parent)), f"{step}/{output.parent.name}"
        assert step_files(run_dir, step) == step_files(reference, step), step
    for name in ("synthetic.jsonl", "rejects.jsonl"):
        assert (run_dir / name).read_text(encoding="utf-8") == (reference / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("kills", [12, pytest.param(40, marks=pytest.mark.slow)])
def test_run_killed_at_many_points_resumes_to_the_uninterrupted_outcome(tmp_path, tiny_run, kills):
    config, reference, run_dir = tiny_run.config, tiny_run.run_dir, tmp_path / "killed"
    steps = [step.name for step in make_pipeline(load_config(config), reference).steps]
    assert len(steps) >= 20 and all(read_manifest(reference / s)["status"] == "done" for s in steps)

    points = draw_points(candidate_points(reference, steps), kills, KILL_SEED)
    ctrl_c = next(i for i, p in enumerate(points) if p.path and p.path.endswith(".jsonl"))  # mid record step
    landed = []
    for index, point in enumerate(points):
        if point.reached(run_dir):  # an earlier kill landed past it
            continue
        signum = signal.SIGINT if index == ctrl_c else signal.SIGKILL
        process = relevel_popen("run", "--config", config, "--out", run_dir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True,
                                # a background job inherits SIGINT ignored: give the child a terminal's default
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
        reached = wait_for(lambda: point.reached(run_dir), process, timeout=120)
        assert reached and process.poll() is None, f"the run ended before {point}: {process.stderr.read()}"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        landed.append(where(run_dir, steps))
        if signum == signal.SIGINT:
            assert process.returncode == 130 and "Traceback" not in stderr, stderr
            assert f"Resume with: relevel run --config {config} --out {run_dir}" in " ".join(stderr.split())
        else:
            assert process.returncode == -signal.SIGKILL
    assert len(set(landed)) >= 10, landed
    assert sum(place.startswith("in ") for place in landed) >= len(landed) // 2, landed  # mostly mid-step

    resumed = relevel_cli("run", "--config", config, "--out", run_dir, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outcome(run_dir, reference, steps)
    manifests = [read_manifest(run_dir / s) for s in steps]
    assert sum(m["resumes"] for m in manifests) >= 3  # steps went on from committed work, not from scratch
    assert any(m["metrics"].get("items_resumed") for m in manifests)
