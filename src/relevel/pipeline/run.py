"""Assemble a run from a config: which steps, bound to what; then run it and write its report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from relevel.config import RunConfig
from relevel.errors import RelevelError
from relevel.eval.classification import classification_tables
from relevel.eval.generation import control_tables
from relevel.eval.report import Table, documents_table, level_table, structure_table, write_report
from relevel.pipeline.annotate import BuildD2Q, LinkCandidates
from relevel.pipeline.generate import ControlAccuracy, TrainGenerator
from relevel.pipeline.ingest import HoldOutEvaluation, IngestSplit
from relevel.pipeline.io import atomic_write_text, read_records
from relevel.pipeline.judge import JudgePairs, TrainJudge
from relevel.pipeline.runner import Pipeline, StepOutcome
from relevel.pipeline.stats import DataStats
from relevel.pipeline.step import Step

# Stages of the SSRA pipeline that this version does not have yet; the run says so instead of faking them.
NOT_BUILT = (
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
    steps.append(TrainJudge(name="judge", bind={"train": prepared["train"]}, scale=config.scale,
                            config=config.judge))
    batch_size = config.runtime.inference_batch_size
    if "dev" in splits:
        steps.append(JudgePairs(name="judge-dev", bind={"judge": "judge/model", "pairs": prepared["dev"]},
                                scale=config.scale, batch_size=batch_size))
    steps += stage1_steps(config, prepared)
    return steps


def stage1_steps(config: RunConfig, prepared: dict[str, str]) -> list[Step]:
    """Links → judged links → D2Q pairs → generator; with an evaluation split, its control accuracy."""
    link_bind = {"train": prepared["train"]}
    if "unlabeled" in prepared:
        link_bind["unlabeled"] = prepared["unlabeled"]
    steps: list[Step] = [
        LinkCandidates(name="link", bind=link_bind, config=config.linking),
        JudgePairs(name="reannotate", bind={"judge": "judge/model", "pairs": "link/links"}, scale=config.scale,
                   batch_size=config.runtime.inference_batch_size),
        BuildD2Q(name="d2q", bind={"train": prepared["train"], "links": "link/links",
                                   "predictions": "reannotate/predictions"}, scale=config.scale,
                 config=config.annotation),
        TrainGenerator(name="generator", bind={"pairs": "d2q/pairs"}, scale=config.scale, config=config.generator),
    ]
    if "dev" in config.data.splits():
        steps += [
            TrainJudge(name="judge-heldout", bind={"train": prepared["train"]}, scale=config.scale,
                       config=config.judge, subset="held-out"),
            ControlAccuracy(name="control", bind={"generator": "generator/model", "judge": "judge-heldout/model",
                                                  "documents": "ingest-dev/records", "train": prepared["train"]},
                            scale=config.scale, documents=config.control.documents,
                            queries_per_level=config.control.queries_per_level, seed=config.control.seed,
                            batch_size=config.runtime.inference_batch_size),
        ]
    return steps


@dataclass(frozen=True)
class RunResult:
    config: RunConfig
    run_dir: Path
    outcomes: list[StepOutcome]
    rejects: int
    report: Path


def make_pipeline(config: RunConfig, run_dir: Path, until: str | None = None) -> Pipeline:
    """The run's steps, or those up to and including `until` (steps are listed in dependency order)."""
    steps = build_steps(config)
    if until is not None:
        names = [s.name for s in steps]
        if until not in names:
            raise RelevelError(f"--until {until!r}: this config's run has the steps {', '.join(names)}")
        steps = steps[:names.index(until) + 1]
    return Pipeline(steps, run_dir, config.runtime.chunk_size, config.runtime.progress)


def run(config: RunConfig, run_dir: Path, on_step: Callable[[StepOutcome], None] | None = None,
        until: str | None = None) -> RunResult:
    if config.runtime.threads:
        import torch

        torch.set_num_threads(config.runtime.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True,
                                                             sort_keys=False))
    pipeline = make_pipeline(config, run_dir, until)
    outcomes = pipeline.run(on_step)
    rejects = merge_rejects(run_dir, [s.name for s in pipeline.steps if "rejects" in s.outputs])
    report = write_run_report(config, run_dir, outcomes, rejects)
    return RunResult(config, run_dir, outcomes, rejects, report)


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
    rows = [[o.step, o.status, f"{o.wall_s:.2f}s", f"{o.manifest['wall_s']:.0f}s", o.manifest.get("peak_rss_mib", ""),
             ", ".join(f"{k} {v}" for k, v in o.manifest.get("counts", {}).items())] for o in outcomes]
    return Table("Steps", ["step", "status", "wall now", "wall when run", "peak RSS MiB", "records out"], rows)


def data_tables(stats: dict[str, dict]) -> list[Table]:
    pair_splits = {split: s for split, s in stats.items() if "pairs" in s}
    tables = [level_table(split, s) for split, s in pair_splits.items()]
    tables.append(structure_table(pair_splits))
    tables += [documents_table(split, s) for split, s in stats.items() if "pairs" not in s]
    return tables


def judge_report(config: RunConfig, by_step: dict[str, dict]) -> list[Table | str]:
    fit = by_step["judge"]["metrics"]["fit"]
    blocks: list[Table | str] = [
        f"Backend `{config.judge.backend}`, trained on {fit['train_pairs']} pairs in "
        f"{by_step['judge']['wall_s']:.0f}s: {fit['steps']} steps, best tune macro-F1 at step {fit['best_step']}; "
        f"temperature {fit['temperature']:.3f} fitted on {fit['tune_pairs']} query-disjoint tune pairs."]
    tune = by_step["judge"]["metrics"]["tune"]
    blocks.append(f"Tune slice: macro-F1 {tune['macro_f1']:.4f}, ECE {tune['ece_uncalibrated']:.4f} before "
                  f"calibration → {tune['ece']:.4f} after.")
    if "judge-dev" in by_step:
        blocks += classification_tables(by_step["judge-dev"]["metrics"], config.scale, "Judge on dev")
    return blocks


def stage1_report(config: RunConfig, by_step: dict[str, dict]) -> list[Table | str]:
    link = by_step["link"]["metrics"]
    d2q = by_step["d2q"]["metrics"]
    blocks: list[Table | str] = [
        f"Linked {link['documents']} documents to queries from a pool of {link['query_pool']} real queries: "
        + ", ".join(f"{n} {origin}" for origin, n in link["links_by_origin"].items())
        + f". The judge labelled {d2q['links_scored']} links; {d2q['links_kept']} reached confidence "
        f"≥ {config.annotation.min_confidence}.",
        Table("D2Q data, before (human pairs) → after (with judged links)", ["measure", "before", "after"],
              [[key.replace("_", " "), d2q["before"][key], d2q["after"][key]]
               for key in ("pairs", "documents", "queries_per_document", "documents_with_2_or_more_levels",
                           "duplicate_query_rate")]
              + [[f"level {name}", d2q["before"]["levels"][name], d2q["after"]["levels"][name]]
                 for name in d2q["after"]["levels"]]),
    ]
    if "generator" in by_step:
        fit = by_step["generator"]["metrics"]["fit"]
        blocks.append(f"Generator `{config.generator.backend}`: {fit['train_examples']} examples, vocabulary "
                      f"{fit['vocabulary']} pieces, {fit['steps']} steps in {by_step['generator']['wall_s']:.0f}s "
                      f"(best tune loss at step {fit['best_step']}).")
    if "control" in by_step:
        blocks += control_tables(by_step["control"]["metrics"], config.scale)
    return blocks


def write_run_report(config: RunConfig, run_dir: Path, outcomes: list[StepOutcome], rejects: int) -> Path:
    by_step = {o.step: o.manifest for o in outcomes}
    held_out = by_step.get("holdout", {}).get("metrics", {}).get("removed", {})
    sections: list[tuple[str, list[Table | str]]] = [
        ("Input", [input_table(outcomes), f"Rejected rows: {rejects} (see `rejects.jsonl`)."]),
        ("Evaluation data kept out of training",
         [Table("Removed", ["what", "records"], [[k, v] for k, v in held_out.items()]) if held_out
          else "Nothing overlapped the evaluation split." if "holdout" in by_step
          else "No evaluation split configured."]),
        *([("Data", data_tables(by_step["stats"]["metrics"]))] if "stats" in by_step else []),
        *([("Judge", judge_report(config, by_step))] if "judge" in by_step else []),
        *([("Stage 1: re-annotation and query generator", stage1_report(config, by_step))]
          if "d2q" in by_step else []),
        ("Steps", [steps_table(outcomes)]),
        ("Not built yet", ["\n".join(f"- {stage}" for stage in NOT_BUILT)]),
    ]
    return write_report(run_dir / "report.md", f"relevel run: {config.name}", sections)
