"""Assemble a run from a config: which steps, bound to what; then run it and write its report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from relevel.config import RunConfig
from relevel.eval.report import Table, documents_table, level_table, structure_table, write_report
from relevel.pipeline.ingest import HoldOutEvaluation, IngestSplit
from relevel.pipeline.io import atomic_write_text, read_records
from relevel.pipeline.runner import Pipeline, StepOutcome
from relevel.pipeline.stats import DataStats
from relevel.pipeline.step import Step

# Stages of the SSRA pipeline that this version does not have yet; the run says so instead of faking them.
NOT_BUILT = (
    "judge: score model trained on the labelled pairs",
    "stage1: re-annotation into D2Q data and the level-controlled query generator",
    "stage2: controlled synthesis rounds",
    "embed: embedder training and graded evaluation",
)


def build_steps(config: RunConfig) -> list[Step]:
    splits = config.data.splits()
    steps: list[Step] = [
        IngestSplit(name=f"ingest-{split}", path=path, kind="documents" if split == "unlabeled" else "pairs",
                    scope=split, spec=config.data.spec(), scale=config.scale, on_error=config.data.on_error)
        for split, path in splits.items()
    ]
    prepared = {split: f"ingest-{split}/records" for split in splits}
    if "dev" in splits:
        holdout_bind = {"train": prepared["train"], "eval": prepared["dev"]}
        if "unlabeled" in splits:
            holdout_bind["unlabeled"] = prepared["unlabeled"]
        steps.append(HoldOutEvaluation(name="holdout", bind=holdout_bind))
        prepared.update({split: f"holdout/{split}" for split in holdout_bind if split != "eval"})
    steps.append(DataStats(name="stats", bind=prepared, scale=config.scale))
    return steps


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    outcomes: list[StepOutcome]
    rejects: int
    report: Path

    def manifest(self, step: str) -> dict:
        return next(o.manifest for o in self.outcomes if o.step == step)


def make_pipeline(config: RunConfig, run_dir: Path) -> Pipeline:
    return Pipeline(build_steps(config), run_dir, config.runtime.chunk_size, config.runtime.progress)


def run(config: RunConfig, run_dir: Path, on_step: Callable[[StepOutcome], None] | None = None) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True,
                                                             sort_keys=False))
    pipeline = make_pipeline(config, run_dir)
    outcomes = pipeline.run(on_step)
    rejects = merge_rejects(run_dir, [s.name for s in pipeline.steps if "rejects" in s.outputs])
    report = write_run_report(config, run_dir, outcomes, rejects)
    return RunResult(run_dir, outcomes, rejects, report)


def merge_rejects(run_dir: Path, steps: list[str]) -> int:
    """All rejected input rows of the run in one `rejects.jsonl`, each with the step that rejected it."""
    lines = [json.dumps({"step": step, **r}, ensure_ascii=False) + "\n"
             for step in steps for r in read_records(run_dir / step / "rejects")]
    atomic_write_text(run_dir / "rejects.jsonl", "".join(lines))
    return len(lines)


def input_table(outcomes: list[StepOutcome]) -> Table:
    rows = []
    for outcome in outcomes:
        if not outcome.step.startswith("ingest-"):
            continue
        m = outcome.manifest["metrics"]
        rows.append([outcome.step.removeprefix("ingest-"), outcome.manifest["input_files"]["path"]["path"],
                     m["rows"], m["records"], m["rejected"], m["blank_lines"], m.get("duplicate_pairs", 0),
                     m.get("conflicting_pairs", 0)])
    return Table("Input files", ["split", "file", "rows", "records", "rejected", "blank lines",
                                 "duplicate pairs", "conflicting labels"], rows)


def steps_table(outcomes: list[StepOutcome]) -> Table:
    rows = [[o.step, o.status, f"{o.wall_s:.2f}s",
             ", ".join(f"{k} {v}" for k, v in o.manifest.get("counts", {}).items())] for o in outcomes]
    return Table("Steps", ["step", "status", "wall", "records out"], rows)


def data_tables(stats: dict[str, dict]) -> list[Table]:
    pair_splits = {split: s for split, s in stats.items() if "pairs" in s}
    tables = [level_table(split, s) for split, s in pair_splits.items()]
    tables.append(structure_table(pair_splits))
    tables += [documents_table(split, s) for split, s in stats.items() if "pairs" not in s]
    return tables


def write_run_report(config: RunConfig, run_dir: Path, outcomes: list[StepOutcome], rejects: int) -> Path:
    by_step = {o.step: o.manifest for o in outcomes}
    held_out = by_step.get("holdout", {}).get("metrics", {}).get("removed", {})
    sections: list[tuple[str, list[Table | str]]] = [
        ("Input", [input_table(outcomes), f"Rejected rows: {rejects} (see `rejects.jsonl`)."]),
        ("Evaluation data kept out of training",
         [Table("Removed", ["what", "records"], [[k, v] for k, v in held_out.items()]) if held_out
          else "Nothing overlapped the evaluation split." if "holdout" in by_step
          else "No evaluation split configured."]),
        ("Data", data_tables(by_step["stats"]["metrics"])),
        ("Steps", [steps_table(outcomes)]),
        ("Not built yet", ["\n".join(f"- {stage}" for stage in NOT_BUILT)]),
    ]
    return write_report(run_dir / "report.md", f"relevel run: {config.name}", sections)
