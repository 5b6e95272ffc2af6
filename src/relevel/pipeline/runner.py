"""Runs steps in order in a run directory: checks the plan first, then for each step a cache hit, a resume
or a fresh run, decided by its key (step class, VERSION, identity, upstream keys, input file hashes)."""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import re
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from relevel import __version__
from relevel.config import RuntimeConfig
from relevel.errors import RelevelError
from relevel.pipeline.engine import Engine, LocalEngine, create_engine
from relevel.pipeline.io import file_sha256, write_json
from relevel.pipeline.step import Step, StepContext

MANIFEST = "manifest.json"
CACHE_DIR = "cache"  # outputs of frozen models that several steps reuse; deleting it costs only time
Status = Literal["cached", "resume", "run"]
OnVersionMismatch = Literal["rerun", "stop"]
RUN_CONFIG = "config.yaml"  # what `relevel run` leaves in a run directory, beside the steps' folders
_STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    key: str
    status: Status


@dataclass(frozen=True)
class StepOutcome:
    step: str
    status: Status
    wall_s: float
    manifest: dict


class Pipeline:
    """An ordered list of steps writing under `run_dir/<step name>/`."""

    def __init__(self, steps: Sequence[Step], run_dir: Path, chunk_size: int = 1000, progress: bool = True,
                 engine: Engine | None = None, on_version_mismatch: OnVersionMismatch = "rerun"):
        self.steps, self.run_dir = list(steps), Path(run_dir)
        self.chunk_size, self.progress, self.on_version_mismatch = chunk_size, progress, on_version_mismatch
        self.engine = engine or LocalEngine()
        self._file_hashes: dict[Path, str] = {}
        self._check()

    def _check(self) -> None:
        """Fails before any work if a step is misnamed, or an input is unbound or bound to nothing."""
        produced: set[str] = set()
        names: set[str] = set()
        for step in self.steps:
            if not _STEP_NAME.match(step.name):
                raise RelevelError(f"step name {step.name!r}: use lower-case letters, digits and '-'")
            if step.name in names:
                raise RelevelError(f"step name {step.name!r} is used twice")
            names.add(step.name)
            slots = set(step.inputs) | set(step.optional_inputs)
            for slot in step.inputs:
                if slot not in step.bind:
                    raise RelevelError(f"step {step.name!r}: input '{slot}' is not bound; "
                                       f"pass bind={{'{slot}': 'STEP/OUTPUT'}}")
            for slot, ref in step.bind.items():
                if slot not in slots:
                    raise RelevelError(f"step {step.name!r} has no input '{slot}'; it takes {sorted(slots)}")
                if ref not in produced:
                    raise RelevelError(f"step {step.name!r}: input '{slot}' = {ref!r} is not an output of an "
                                       f"earlier step; available: {sorted(produced)}")
            produced |= {f"{step.name}/{output}" for output in step.outputs}

    def plan(self) -> list[PlannedStep]:
        planned: list[PlannedStep] = []
        keys: dict[str, str] = {}
        for step in self.steps:
            key = self._key(step, keys)
            keys[step.name] = key
            manifest = read_manifest(self.run_dir / step.name)
            if manifest and manifest.get("key") == key:
                status: Status = "cached" if manifest.get("status") == "done" else "resume"
            else:
                status = "run"
                if manifest and manifest.get("version") != step.VERSION and self.on_version_mismatch == "stop":
                    raise RelevelError(
                        f"{self.run_dir / step.name / MANIFEST}: step {step.name!r} was made by version "
                        f"{manifest.get('version')} of its code (relevel {manifest.get('package_version')}); this "
                        f"is version {step.VERSION} (relevel {__version__}). Set runtime.on_version_mismatch: "
                        "rerun to redo it and everything after it, or use another --out")
            planned.append(PlannedStep(step, key, status))
        return planned

    def run(self, on_step: Callable[[StepOutcome], None] | None = None) -> list[StepOutcome]:
        check_run_dir(self.run_dir)
        outcomes = []
        for planned in self.plan():
            outcome = self._run_step(planned)
            outcomes.append(outcome)
            if on_step:
                on_step(outcome)
        return outcomes

    def _run_step(self, planned: PlannedStep) -> StepOutcome:
        step, step_dir = planned.step, self.run_dir / planned.step.name
        if planned.status == "cached":
            return StepOutcome(step.name, "cached", 0.0, read_manifest(step_dir))
        if planned.status == "run" and step_dir.exists():
            shutil.rmtree(step_dir)  # outputs of another key: stale
        step_dir.mkdir(parents=True, exist_ok=True)
        previous = read_manifest(step_dir) if planned.status == "resume" else None
        manifest = {
            "step": step.name,
            "class": f"{type(step).__module__}.{type(step).__qualname__}",
            "version": step.VERSION,
            "key": planned.key,
            "identity": step.identity(),
            "inputs": step.bind,
            "input_files": {slot: {"path": str(path), "sha256": self._file_hash(path)}
                            for slot, path in step.input_files().items()},
            "package_version": __version__,
            # resume keeps the chunking it started with, or chunk numbers would not line up.
            "chunk_size": previous["chunk_size"] if previous else self.chunk_size,
            "status": "running",
            "started": previous["started"] if previous else _now(),
            "resumes": previous["resumes"] + 1 if previous else 0,
        }
        write_json(step_dir / MANIFEST, manifest)
        ctx = StepContext(
            step_dir=step_dir,
            inputs={slot: self.run_dir / ref for slot, ref in step.bind.items()},
            chunk_size=manifest["chunk_size"],
            progress=self.progress,
            cache_dir=self.run_dir / CACHE_DIR,
            engine=self.engine,
        )
        start = time.perf_counter()
        # on a copy: what the step loads while it runs (models, encoder stores) is freed when it ends,
        # instead of living as long as the run's step list (a QBQTC run grew to 11.5 GiB that way)
        result = copy.copy(step).run(ctx)
        gc.collect()
        wall = time.perf_counter() - start
        manifest.update(status="done", finished=_now(), wall_s=round(wall, 3), peak_rss_mib=peak_rss_mib(),
                        counts=result.counts, metrics=result.metrics)
        write_json(step_dir / MANIFEST, manifest)
        return StepOutcome(step.name, planned.status, wall, manifest)

    def _key(self, step: Step, upstream: dict[str, str]) -> str:
        payload = {
            "class": f"{type(step).__module__}.{type(step).__qualname__}",
            "version": step.VERSION,
            "identity": step.identity(),
            "inputs": {slot: upstream[ref.split("/")[0]] + "/" + ref.split("/")[1]
                       for slot, ref in sorted(step.bind.items())},
            "files": {slot: self._file_hash(path) for slot, path in sorted(step.input_files().items())},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _file_hash(self, path: Path) -> str:
        if path not in self._file_hashes:
            if path.is_dir():  # a model folder: the hash of its files' names and contents
                files = sorted(f for f in path.rglob("*") if f.is_file())
                listing = "".join(f"{f.relative_to(path)}\t{file_sha256(f)}\n" for f in files)
                self._file_hashes[path] = hashlib.sha256(listing.encode()).hexdigest()
            elif path.is_file():
                self._file_hashes[path] = file_sha256(path)
            else:
                raise RelevelError(f"{path}: input file not found")
        return self._file_hashes[path]


def pipeline_for(steps: Sequence[Step], run_dir: Path, runtime: RuntimeConfig) -> Pipeline:
    return Pipeline(steps, run_dir, runtime.chunk_size, runtime.progress, create_engine(runtime.engine),
                    runtime.on_version_mismatch)


def check_run_dir(run_dir: Path) -> None:
    """`--out` must be a new or empty folder, or a run directory: a run never mixes its outputs into (or, on a
    rerun, deletes from) a folder of something else."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RelevelError(f"--out {run_dir}: this is a file; give a folder for the run's outputs")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (
            (run_dir / RUN_CONFIG).is_file() or any(run_dir.glob(f"*/{MANIFEST}"))):
        raise RelevelError(f"--out {run_dir}: this folder is not empty and holds no relevel run; give a new or "
                           "empty folder, or a run directory to resume")


def read_manifest(step_dir: Path) -> dict | None:
    path = Path(step_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # written atomically, so only a foreign file lands here: treat as absent


def peak_rss_mib() -> int:
    """The process's peak resident memory so far (Linux reports KiB): for a step run in a fresh process,
    its own peak; after earlier steps in the same process, an upper bound."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
