"""Assemble a run from a config: which steps, bound to what; then run it and write its report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from relevel.config import DOCUMENT_SPLITS, RunConfig
from relevel.errors import RelevelError
from relevel.eval.bootstrap import paired_bootstrap
from relevel.eval.classification import classification_tables
from relevel.eval.generation import control_tables
from relevel.eval.plots import control_by_round, level_distribution, metrics_by_variant
from relevel.eval.report import (
    Table,
    documents_table,
    level_table,
    structure_table,
    token_limit_table,
    write_report,
)
from relevel.models.encoder import use_runtime
from relevel.pipeline.annotate import BuildD2Q, LinkCandidates
from relevel.pipeline.estimate import LLMCalls, StepEstimate, estimate_plan
from relevel.pipeline.filter import FilterCandidates
from relevel.pipeline.generate import ControlAccuracy, RetrainGenerator, TrainGenerator
from relevel.pipeline.ingest import HoldOutEvaluation, IngestSplit
from relevel.pipeline.io import atomic_write_text, read_records
from relevel.pipeline.judge import JudgePairs, TrainJudge
from relevel.pipeline.review import human_check_sections
from relevel.pipeline.rewrite import RewriteContent
from relevel.pipeline.runner import RUN_CONFIG, Pipeline, StepOutcome, check_run_dir, pipeline_for, read_manifest
from relevel.pipeline.stats import CUT_WARNING_SHARE, DataStats, TokenLimit
from relevel.pipeline.step import Step, Work
from relevel.pipeline.synthesize import GenerateCandidates
from relevel.pipeline.train_embedder import VARIANTS, EvaluateBM25, EvaluateEmbedder, TrainEmbedder

# Experiment variants whose synthetic queries come from another generator than SSRA's, in one round.
BASELINE_GENERATORS = ("vanilla", "prompt-only")


def token_limits(config: RunConfig) -> list[TokenLimit]:
    """The settings at which the run's encoder models cut their input (the LLM backends have their own)."""
    judge, generator, embedder = config.judge, config.generator, config.embedder
    limits = []
    if judge.backend == "embedding-features":
        limits += [TokenLimit("judge.max_length", judge.base_model, judge.max_length, "documents",
                              judge.document_prefix),
                   TokenLimit("judge.max_length", judge.base_model, judge.max_length, "queries", judge.query_prefix)]
    elif judge.backend == "cross-encoder":  # per pair: the document alone is a lower bound
        limits.append(TokenLimit("judge.max_length", judge.base_model, judge.max_length, "documents"))
    if generator.backend == "seq2seq":
        limits += [TokenLimit("generator.max_document_tokens", generator.base_model, generator.max_document_tokens,
                              "documents", generator.document_prefix),
                   TokenLimit("generator.max_query_tokens", generator.base_model, generator.max_query_tokens,
                              "queries", special_tokens=False)]
    if config.experiment is not None:
        limits += [TokenLimit("embedder.max_seq_length", embedder.base_model, embedder.max_seq_length, kind, prefix)
                   for kind, prefix in (("documents", embedder.document_prompt), ("queries", embedder.query_prompt))]
    return limits


def build_steps(config: RunConfig) -> list[Step]:
    splits = config.data.splits()
    steps: list[Step] = []
    for split, path in splits.items():
        if config.rewrite is not None:
            steps.append(RewriteContent(name=f"rewrite-{split}", path=path, format=config.data.format,
                                        config=config.rewrite))
        steps.append(IngestSplit(name=f"ingest-{split}", path=path, kind="documents" if split in DOCUMENT_SPLITS
                                 else "pairs", scope=split, spec=config.data.spec(), scale=config.scale,
                                 on_error=config.data.on_error,
                                 bind={"rows": f"rewrite-{split}/rows"} if config.rewrite is not None else {}))
    prepared = {split: f"ingest-{split}/records" for split in splits}
    if "dev" in splits:
        holdout_bind = {"train": prepared["train"], "eval": prepared["dev"]}
        if "unlabeled" in splits:
            holdout_bind["unlabeled"] = prepared["unlabeled"]
        steps.append(HoldOutEvaluation(name="holdout", bind=holdout_bind))
        prepared.update({split: f"holdout/{split}" for split in holdout_bind if split != "eval"})
    steps.append(DataStats(name="stats", bind=prepared, scale=config.scale, token_limits=token_limits(config)))
    steps.append(TrainJudge(name="judge", bind={"train": prepared["train"]}, scale=config.scale,
                            config=config.judge))
    if "dev" in splits:
        steps.append(judge_step(config, "judge-dev", prepared["dev"]))
    steps += stage1_steps(config, prepared)
    if "unlabeled" in prepared:
        steps += stage2_steps(config, prepared)
    if config.experiment is not None:
        steps += experiment_steps(config, prepared)
    return steps


def judge_step(config: RunConfig, name: str, pairs: str) -> JudgePairs:
    """The run's judge on one set of pairs."""
    return JudgePairs(name=name, bind={"judge": "judge/model", "pairs": pairs}, scale=config.scale,
                      batch_size=config.runtime.inference_batch_size,
                      seconds_per_pair=config.judge.cpu_seconds_per_pair())


def stage1_steps(config: RunConfig, prepared: dict[str, str]) -> list[Step]:
    """Links → judged links → D2Q pairs → generator; with an evaluation split, its control accuracy."""
    link_bind = {"train": prepared["train"]}
    if "unlabeled" in prepared:
        link_bind["unlabeled"] = prepared["unlabeled"]
    steps: list[Step] = [
        LinkCandidates(name="link", bind=link_bind, config=config.linking),
        judge_step(config, "reannotate", "link/links"),
        BuildD2Q(name="d2q", bind={"train": prepared["train"], "links": "link/links",
                                   "predictions": "reannotate/predictions"}, scale=config.scale,
                 config=config.annotation),
        TrainGenerator(name="generator", bind={"pairs": "d2q/pairs"}, scale=config.scale, config=config.generator),
    ]
    if "dev" in config.data.splits():
        steps += [
            TrainJudge(name="judge-heldout", bind={"train": prepared["train"]}, scale=config.scale,
                       config=config.judge, subset="held-out"),
            control_step(config, "control", "generator/model", prepared),
        ]
    return steps


def control_step(config: RunConfig, name: str, generator: str, prepared: dict[str, str]) -> ControlAccuracy:
    return ControlAccuracy(name=name, bind={"generator": generator, "judge": "judge-heldout/model",
                                            "documents": "ingest-dev/records", "train": prepared["train"]},
                           scale=config.scale, documents=config.control.documents,
                           queries_per_level=config.control.queries_per_level, seed=config.control.seed,
                           batch_size=config.runtime.inference_batch_size, generator_backend=config.generator.backend,
                           judge_seconds_per_pair=config.judge.cpu_seconds_per_pair())


def last_round_step(config: RunConfig, kind: str) -> str | None:
    return f"{kind}-r{config.synthesis.rounds}" if config.synthesis.rounds and config.data.unlabeled else None


def stage2_steps(config: RunConfig, prepared: dict[str, str]) -> list[Step]:
    """Per round: candidates for unseen documents → judged → filtered (kept so far) → generator retrained
    warm from the last one on D2Q + kept; with an evaluation split, its control accuracy."""
    synthesis, steps = config.synthesis, []
    retrain = config.generator.model_copy(update={"epochs": synthesis.retrain_epochs,
                                                  "max_examples": synthesis.retrain_examples})
    generator = "generator/model"
    for r in range(1, synthesis.rounds + 1):
        previous = {"kept": f"filter-r{r - 1}/kept", "dropped": f"filter-r{r - 1}/dropped"} if r > 1 else {}
        steps += [
            GenerateCandidates(name=f"synthesize-r{r}", bind={"generator": generator, "documents":
                               prepared["unlabeled"], "train": prepared["train"], **previous},
                               scale=config.scale, config=synthesis, round=r,
                               generator_backend=config.generator.backend),
            judge_step(config, f"judge-r{r}", f"synthesize-r{r}/candidates"),
            FilterCandidates(name=f"filter-r{r}", bind={"candidates": f"synthesize-r{r}/candidates",
                             "predictions": f"judge-r{r}/predictions", "train": prepared["train"],
                             **({"kept": previous["kept"]} if previous else {})},
                             scale=config.scale, config=synthesis, round=r, generator=generator,
                             llm=config.llm if synthesis.llm_order_check else None),
            RetrainGenerator(name=f"generator-r{r}", bind={"pairs": "d2q/pairs", "synthetic": f"filter-r{r}/kept",
                                                           "init": generator},
                             scale=config.scale, config=retrain.model_copy(update={"seed": retrain.seed + r}),
                             replay=synthesis.replay),
        ]
        generator = f"generator-r{r}/model"
        if "dev" in config.data.splits():
            steps.append(control_step(config, f"control-r{r}", generator, prepared))
    return steps


def experiment_steps(config: RunConfig, prepared: dict[str, str]) -> list[Step]:
    """Per variant and seed: train the embedder, evaluate it on dev; plus the zero-shot base and BM25."""
    experiment = config.experiment
    if "dev" not in config.data.splits():
        raise RelevelError("the experiment evaluates on the `dev` split: add one to the config's data")
    last_filter = last_round_step(config, "filter")
    synthetic = {"real": None, "stage1": "filter-r1/kept", "ssra": f"{last_filter}/kept",
                 "ssra-binary": f"{last_filter}/kept", "vanilla": "filter-vanilla/kept",
                 "prompt-only": "filter-prompt-only/kept"}
    if last_filter is None and any(synthetic[v] for v in experiment.variants):
        raise RelevelError(f"variants {list(experiment.variants)} need synthetic data: set synthesis.rounds ≥ 1 "
                           "and an unlabeled split, or keep only the 'real' variant")
    evaluation = {"pairs": "ingest-dev/records"}
    if config.data.distractors is not None:
        evaluation["distractors"] = "ingest-distractors/records"
    steps: list[Step] = []
    for baseline in BASELINE_GENERATORS:
        if baseline in experiment.variants:
            steps += baseline_synthesis_steps(config, prepared, baseline)
    if experiment.baselines:
        steps += [EvaluateEmbedder(name="eval-zero-shot", bind=evaluation, scale=config.scale,
                                   config=config.embedder),
                  EvaluateBM25(name="eval-bm25", bind=evaluation, scale=config.scale)]
    for variant in experiment.variants:
        for seed in experiment.seeds:
            bind = {"train": prepared["train"], **({"unlabeled": prepared["unlabeled"]} if "unlabeled" in prepared
                                                   else {})}
            if synthetic[variant]:
                bind["synthetic"] = synthetic[variant]
            name = f"{variant}-s{seed}"
            steps += [TrainEmbedder(name=f"embed-{name}", bind=bind, scale=config.scale, variant=variant,
                                    config=config.embedder.model_copy(update={"seed": seed})),
                      EvaluateEmbedder(name=f"eval-{name}", bind={**evaluation, "model": f"embed-{name}/model"},
                                       scale=config.scale, config=config.embedder)]
    return steps


def baseline_synthesis_steps(config: RunConfig, prepared: dict[str, str], baseline: str) -> list[Step]:
    """A baseline generator → one synthesis round with as many requests, for the same unseen documents, as
    all SSRA rounds together → the same judge and filter. 'vanilla': SSRA's generator trained on the original
    pairs only (no re-annotated links); 'prompt-only': a prompted LLM."""
    synthesis = config.synthesis
    if synthesis.documents_per_round is not None:
        synthesis = synthesis.model_copy(update={"documents_per_round": synthesis.documents_per_round
                                                 * synthesis.rounds})
    generator_config = config.generator if baseline == "vanilla" else config.generator.model_copy(
        update={"backend": "llm-prompt", "llm": config.llm})
    generator = f"generator-{baseline}/model"
    return [
        TrainGenerator(name=f"generator-{baseline}", bind={"pairs": prepared["train"]}, scale=config.scale,
                       config=generator_config),
        GenerateCandidates(name=f"synthesize-{baseline}", bind={"generator": generator, "documents":
                           prepared["unlabeled"], "train": prepared["train"]}, scale=config.scale,
                           config=synthesis, round=1, generator_backend=generator_config.backend),
        judge_step(config, f"judge-{baseline}", f"synthesize-{baseline}/candidates"),
        FilterCandidates(name=f"filter-{baseline}", bind={"candidates": f"synthesize-{baseline}/candidates",
                         "predictions": f"judge-{baseline}/predictions", "train": prepared["train"]},
                         scale=config.scale, config=synthesis, round=1, generator=generator,
                         llm=config.llm if synthesis.llm_order_check else None),
    ]


# Tokens of one LLM request, for the dry run: its prompt rendered around a 10-character query and a 60-character
# document (QBQTC-like), at about 3 characters a token, plus the longest answer allowed (an upper bound).
SAMPLE_TEXTS = {"query": "查" * 10, "document": "文" * 60}
CHARS_PER_TOKEN = 3


def request_tokens(config: RunConfig, llm, task: str) -> int:
    from relevel.models.llm.prompts import Prompts

    scale, few_shot, rewrite = config.scale, config.generator.few_shot_per_level, config.rewrite
    example = {"query": SAMPLE_TEXTS["query"], "document": SAMPLE_TEXTS["document"], "level": 0}
    variables = {"scale": scale, "level": scale.levels[0], "n": config.synthesis.candidates,
                 "fields": {name: SAMPLE_TEXTS["document"] for name in rewrite.fields} if rewrite else {},
                 "max_chars": rewrite.max_chars if rewrite else 0,
                 "examples": [example] * (few_shot * scale.num_levels), "query_a": SAMPLE_TEXTS["query"],
                 "query_b": SAMPLE_TEXTS["query"], **SAMPLE_TEXTS}
    messages = Prompts(llm.prompts_dir).messages(task, **variables)
    return sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN + llm.max_tokens


def llm_calls(config: RunConfig, steps: list[Step]) -> LLMCalls:
    """Which steps ask an LLM, how many requests their work makes, and the tokens of one."""
    judge, generator_llm = config.judge, {f"{s.name}/model": s.config.llm or config.llm for s in steps
                                          if isinstance(s, TrainGenerator) and s.config.backend == "llm-prompt"}

    def calls(step: Step, work: Work) -> tuple[int, int]:
        asked: list[tuple[int, object, str]] = []  # (requests, endpoint, prompt)
        if judge.backend == "llm" and isinstance(step, JudgePairs | ControlAccuracy):
            asked.append((work.judge_calls, judge.llm or config.llm, "judge"))
        if judge.backend == "llm" and isinstance(step, TrainJudge):
            asked.append((judge.calibration_pairs, judge.llm or config.llm, "judge"))
        if judge.backend == "reasoning-lm" and judge.reasoning and isinstance(step, TrainJudge):
            asked.append((min(work.items, judge.train_examples), judge.llm or config.llm, "teacher"))
        if step.bind.get("generator") in generator_llm and work.generated:
            per_request = (config.synthesis.candidates if isinstance(step, GenerateCandidates)
                           else config.control.queries_per_level)
            asked.append((work.generated // per_request, generator_llm[step.bind["generator"]], "synthesize"))
        if isinstance(step, RewriteContent):
            asked.append((work.items, step.config.llm, "rewrite"))  # at most: rows already filled are kept
        if isinstance(step, FilterCandidates) and step.llm is not None:
            asked.append((work.items, step.llm, "order"))  # at most one comparison per candidate
        requests = sum(n for n, _, _ in asked)
        tokens = sum(n * request_tokens(config, llm, task) for n, llm, task in asked)
        return requests, tokens // requests if requests else 0

    return calls


def estimate_run(config: RunConfig, run_dir: Path, until: str | None = None) -> list[StepEstimate]:
    pipeline = make_pipeline(config, run_dir, until)
    return estimate_plan(pipeline.plan(), run_dir, llm_calls(config, pipeline.steps))


def plan_table(run_dir: Path, estimates: list[StepEstimate]) -> Table:
    def count(value: int | None) -> object:
        return value if value else "" if value == 0 else "?"

    rows = [[e.planned.step.name, e.planned.status, count(e.records), count(e.work.judge_calls if e.work else 0),
             count(e.work.generated if e.work else 0), count(e.llm_requests), count(e.llm_tokens),
             "?" if e.seconds is None else f"{e.seconds / 60:.1f}"] for e in estimates]
    pending = [e for e in estimates if e.planned.status != "cached"]
    unknown = sum(e.seconds is None for e in pending)
    rows.append(["total", f"{len(pending)} to run", "", sum(e.work.judge_calls for e in pending if e.work),
                 sum(e.work.generated for e in pending if e.work), sum(e.llm_requests for e in pending),
                 sum(e.llm_tokens for e in pending),
                 f"{sum(e.seconds or 0 for e in pending) / 60:.0f}" + (f" + {unknown} unknown" if unknown else "")])
    return Table(f"Plan for {run_dir} (projected minutes on the reference 2-core CPU machine; counts after a "
                 "filter, and the minutes of training that stops early, are upper bounds)",
                 ["step", "status", "records", "judge calls", "generated queries", "LLM requests", "LLM tokens",
                  "minutes"], rows)


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
    return pipeline_for(steps, run_dir, config.runtime)


def run(config: RunConfig, run_dir: Path, on_step: Callable[[StepOutcome], None] | None = None,
        until: str | None = None) -> RunResult:
    if config.runtime.threads:
        import torch

        torch.set_num_threads(config.runtime.threads)
    use_runtime(config.runtime.encoder)
    check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_CONFIG, yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True,
                                                             sort_keys=False))
    pipeline = make_pipeline(config, run_dir, until)
    outcomes = pipeline.run(on_step)
    # steps of the full run that are done and still current stay in the report when only a part was run
    # (e.g. `judge train` into a finished run's folder)
    ran = {o.step: o for o in outcomes}
    outcomes = [ran.get(p.step.name) or StepOutcome(p.step.name, "cached", 0.0, read_manifest(run_dir / p.step.name))
                for p in make_pipeline(config, run_dir).plan() if p.step.name in ran or p.status == "cached"]
    rejects = merge_rejects(run_dir, [s.name for s in pipeline.steps if "rejects" in s.outputs])
    last_filter = last_round_step(config, "filter")
    if last_filter in {o.step for o in outcomes}:
        write_synthetic(run_dir, last_filter)
    report = write_run_report(config, run_dir, outcomes, rejects)
    return RunResult(config, run_dir, outcomes, rejects, report)


def merge_rejects(run_dir: Path, steps: list[str]) -> int:
    """All rejected input rows of the run in one `rejects.jsonl`, each with the step that rejected it."""
    lines = [json.dumps({"step": step, **r}, ensure_ascii=False) + "\n"
             for step in steps for r in read_records(run_dir / step / "rejects")]
    atomic_write_text(run_dir / "rejects.jsonl", "".join(lines))
    return len(lines)


def write_synthetic(run_dir: Path, filter_step: str) -> None:
    """Every kept synthetic query of the run in one `synthetic.jsonl`."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in read_records(run_dir / filter_step / "kept")]
    atomic_write_text(run_dir / "synthetic.jsonl", "".join(lines))


def input_table(outcomes: list[StepOutcome]) -> Table:
    rows = []
    for outcome in outcomes:
        if not outcome.step.startswith("ingest-"):
            continue
        m = outcome.manifest["metrics"]
        rows.append([outcome.step.removeprefix("ingest-"), outcome.manifest["input_files"]["path"]["path"],
                     m["rows"], m["records"], m["rejected"], m["blank_lines"],
                     sum(m.get("truncated", {}).values()), m.get("duplicate_pairs", 0), m.get("conflicting_pairs", 0)])
    return Table("Input files", ["split", "file", "rows", "records", "rejected", "blank lines", "truncated fields",
                                 "duplicate pairs", "conflicting labels"], rows)


def steps_table(outcomes: list[StepOutcome]) -> Table:
    rows = [[o.step, o.status, f"{o.wall_s:.2f}s", f"{o.manifest['wall_s']:.0f}s", o.manifest.get("peak_rss_mib", ""),
             ", ".join(f"{k} {v}" for k, v in o.manifest.get("counts", {}).items())] for o in outcomes]
    return Table("Steps", ["step", "status", "wall now", "wall when run", "peak RSS MiB", "records out"], rows)


def data_report(stats: dict[str, dict]) -> list[Table | str]:
    pair_splits = {split: s for split, s in stats.items() if "pairs" in s}
    blocks: list[Table | str] = [level_table(split, s) for split, s in pair_splits.items()]
    blocks.append(structure_table(pair_splits))
    blocks += [documents_table(split, s) for split, s in stats.items() if "pairs" not in s]
    limits = [(split, row) for split, s in stats.items() for row in s.get("token_limits", [])]
    if limits:
        blocks.append(token_limit_table(limits))
    blocks += [f"Warning: {row['setting']} = {row['limit']} cuts {row['share_cut']:.0%} of the {split} {row['texts']} "
               f"(p99 {row['tokens']['p99']} tokens); raise it in the config if their ends matter."
               for split, row in limits if row["share_cut"] > CUT_WARNING_SHARE]
    return blocks


def judge_report(config: RunConfig, by_step: dict[str, dict]) -> list[Table | str]:
    fit = by_step["judge"]["metrics"]["fit"]
    if "calibration_pairs" in fit:  # a prompted LLM: nothing trained
        summary = (f"Backend `llm` (model `{config.judge.llm.model}`), prompted with the scale's definitions: "
                   f"temperature {fit['temperature']:.3f} fitted on {fit['calibration_pairs']} query-disjoint "
                   f"tune pairs it judged in {by_step['judge']['wall_s']:.0f}s.")
    else:
        summary = (f"Backend `{config.judge.backend}`, trained on {fit['train_pairs']} pairs in "
                   f"{by_step['judge']['wall_s']:.0f}s: {fit['steps']} steps, best tune macro-F1 at step "
                   f"{fit['best_step']}; temperature {fit['temperature']:.3f} fitted on {fit['tune_pairs']} "
                   "query-disjoint tune pairs.")
    blocks: list[Table | str] = [summary]
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


def stage2_report(config: RunConfig, by_step: dict[str, dict]) -> list[Table | str]:
    names = [level.name for level in config.scale.levels]
    rounds = [r for r in range(1, config.synthesis.rounds + 1) if f"filter-r{r}" in by_step]
    if not rounds:
        return ["No round has finished yet."]
    rows, reasons, diversity, walls = [], [], [], []
    stage1_control = by_step.get("control", {}).get("metrics", {}).get("generator", {}).get("control", {})
    for r in rounds:
        made, kept = by_step[f"synthesize-r{r}"]["metrics"], by_step[f"filter-r{r}"]["metrics"]
        control = by_step.get(f"control-r{r}", {}).get("metrics", {}).get("generator", {})
        rows += [[r, name, made["requested"][name], kept["generated"][name], kept["kept"][name],
                  kept["yield"][name], control.get("control", {}).get(name, ""), stage1_control.get(name, "")]
                 for name in names]
        reasons.append([r, *kept["dropped_by_reason"].values()])
        if control:
            d = control["diversity"]
            diversity.append([r, d["distinct_1"], d["distinct_2"], d["substring_of_document"],
                              d["identical_to_training_query"], d.get("repeated_span"), d["queries"]])
        walls.append([r, *(f"{by_step[f'{kind}-r{r}']['wall_s']:.0f}s" if f"{kind}-r{r}" in by_step else ""
                           for kind in ("synthesize", "judge", "filter", "generator", "control"))])
    last = by_step[f"filter-r{rounds[-1]}"]["metrics"]
    real, mixed = last["levels_real"], last["levels_real_plus_synthetic"]
    return [
        Table("Rounds: requests, judge-confirmed queries and control accuracy (held-out judge, dev documents)",
              ["round", "level", "requested", "generated", "kept", "yield", "control accuracy",
               "control after stage 1"], rows),
        Table("Dropped candidates by reason", ["round", *last["dropped_by_reason"]], reasons),
        *([Table("Queries the retrained generator writes for dev documents", ["round", "distinct-1", "distinct-2",
                 "substring of document", "identical to a training query", "repeated span", "queries"],
                 diversity)]
          if diversity else []),
        Table("Wall time per round", ["round", "synthesize", "judge", "filter", "retrain", "control"], walls),
        Table("Levels: real → real + synthetic", ["level", "real", "real + synthetic", "share after"],
              [[name, real[name], mixed[name], round(mixed[name] / max(1, sum(mixed.values())), 4)]
               for name in names]),
    ]


def experiment_report(config: RunConfig, by_step: dict[str, dict], run_dir: Path) -> list[Table | str]:
    """Metrics per training set (mean ± std over seeds) beside the zero-shot base and BM25; SSRA − real-only
    with a paired per-query bootstrap interval; plots."""
    experiment = config.experiment
    names = [level.name for level in config.scale.levels]
    dims = sorted(config.embedder.matryoshka_dims or ())
    columns = ["ndcg@5", "ndcg@10", "recall@10", "rerank_ndcg@10", "spearman",
               *[f"ap@level>={t}" for t in config.scale.relevance_thresholds],
               *([f"ndcg@10@dim{dims[0]}", f"spearman@dim{dims[0]}"] if dims else [])]
    values: dict[str, dict[str, list[float]]] = {}
    for label, step in (("zero-shot base", "eval-zero-shot"), ("BM25", "eval-bm25")):
        if step in by_step:
            values[label] = {c: [by_step[step]["metrics"][c]] for c in columns if c in by_step[step]["metrics"]}
    for variant in experiment.variants:
        done = [by_step[f"eval-{variant}-s{seed}"]["metrics"] for seed in experiment.seeds
                if f"eval-{variant}-s{seed}" in by_step]
        if done:
            values[variant] = {c: [m[c] for m in done if c in m] for c in columns}

    def cell(v: list[float]) -> str:
        return "" if not v else f"{v[0]:.4f}" if len(v) == 1 else f"{np.mean(v):.4f} ± {np.std(v):.4f}"

    seeds = {v: sum(f"eval-{v}-s{s}" in by_step for s in experiment.seeds) for v in experiment.variants}
    blocks: list[Table | str] = [
        Table("Embedders on dev (mean ± std over seeds)", ["trained on", "seeds", *columns],
              [[label, seeds.get(label, "–"), *(cell(v.get(c, [])) for c in columns)]
               for label, v in values.items()]),
        "Training sets: " + "; ".join(f"**{v}**: {VARIANTS[v]}" for v in experiment.variants) + ".",
    ]
    corpus = next((m["counts"]["corpus"] for step, m in by_step.items()
                   if step.startswith("eval-") and "corpus" in m.get("counts", {})), None)
    if corpus is not None:
        blocks.append(f"Full-corpus retrieval ranks {corpus} documents: dev's own"
                      + (", plus the distractors of `data.distractors`." if config.data.distractors else "."))
    baselines = [b for b in BASELINE_GENERATORS if f"filter-{b}" in by_step]
    if baselines:
        rows = [[b, name, by_step[f"synthesize-{b}"]["metrics"]["requested"][name],
                 by_step[f"filter-{b}"]["metrics"]["generated"][name], by_step[f"filter-{b}"]["metrics"]["kept"][name],
                 by_step[f"filter-{b}"]["metrics"]["yield"][name]] for b in baselines for name in names]
        blocks.append(Table("Baseline generators: one round, same documents and request count as all SSRA rounds",
                            ["generator", "level", "requested", "generated", "kept", "yield"], rows))
    paired = [s for s in experiment.seeds if f"eval-real-s{s}" in by_step and f"eval-ssra-s{s}" in by_step]
    if paired and experiment.bootstrap:
        runs = {v: [list(read_records(run_dir / f"eval-{v}-s{s}" / "scores")) for s in paired]
                for v in ("real", "ssra")}
        first = runs["real"][0]

        def per_query(rows_by_seed: list[list[dict]]) -> dict[str, float]:
            out: dict[str, list[float]] = {}
            for rows in rows_by_seed:
                for r in rows:
                    if r["query_ndcg@10"] is not None:
                        out.setdefault(r["query"], []).append(r["query_ndcg@10"])
            return {q: float(np.mean(v)) for q, v in out.items()}

        gap = paired_bootstrap([r["query"] for r in first], np.array([r["level"] for r in first]),
                               [np.array([r["score"] for r in rows]) for rows in runs["real"]],
                               [np.array([r["score"] for r in rows]) for rows in runs["ssra"]],
                               per_query(runs["real"]), per_query(runs["ssra"]), experiment.bootstrap,
                               experiment.seed)
        blocks.append(Table(f"SSRA − real-only, paired per-query bootstrap ({experiment.bootstrap} resamples, "
                            f"seeds {paired})", ["metric", "difference", "95% low", "95% high"],
                            [[m, g["difference"], g["low"], g["high"]] for m, g in gap.items()]))
    plots = run_dir / "plots"

    def image(title: str, path: Path) -> str:
        return f"![{title}]({path.relative_to(run_dir)})"

    if values:
        blocks.append(image("metrics by training set",
                            metrics_by_variant(plots / "metrics.png", ["ndcg@10", "spearman"], values)))
    last_filter = last_round_step(config, "filter")
    if last_filter in by_step:
        m = by_step[last_filter]["metrics"]
        blocks.append(image("levels", level_distribution(plots / "levels.png", names, m["levels_real"],
                                                         m["levels_real_plus_synthetic"])))
    control = {0: by_step["control"]["metrics"]["generator"]["control"]} if "control" in by_step else {}
    control |= {r: by_step[f"control-r{r}"]["metrics"]["generator"]["control"]
                for r in range(1, config.synthesis.rounds + 1) if f"control-r{r}" in by_step}
    if len(control) > 1:
        blocks.append(image("control accuracy", control_by_round(plots / "control.png", names, control)))
    return blocks


def llm_usage(by_step: dict[str, dict]) -> dict[str, dict]:
    """Per step that asked an LLM: its requests, cache hits, retries and tokens (from the manifests)."""
    usage = {}
    for step, manifest in by_step.items():
        metrics = manifest.get("metrics", {})
        fit = metrics.get("fit")
        found = metrics.get("llm") or (fit.get("llm") if isinstance(fit, dict) else None)
        if found:
            usage[step] = found
    return usage


def llm_usage_table(usage: dict[str, dict]) -> Table:
    return Table("LLM requests per step", ["step", "answers", "unparseable", "requests", "cache hits", "retries",
                                           "prompt tokens", "completion tokens"],
                 [[step, u["answers"], u["failed"], u["requests"], u["cache_hits"],
                   ", ".join(f"{k} {v}" for k, v in u["retries"].items()) or "0", u["prompt_tokens"],
                   u["completion_tokens"]] for step, u in usage.items()])


def write_run_report(config: RunConfig, run_dir: Path, outcomes: list[StepOutcome], rejects: int) -> Path:
    by_step = {o.step: o.manifest for o in outcomes}
    held_out = by_step.get("holdout", {}).get("metrics", {}).get("removed", {})
    sections: list[tuple[str, list[Table | str]]] = [
        ("Input", [input_table(outcomes), f"Rejected rows: {rejects} (see `rejects.jsonl`)."]),
        ("Evaluation data kept out of training",
         [Table("Removed", ["what", "records"], [[k, v] for k, v in held_out.items()]) if held_out
          else "Nothing overlapped the evaluation split." if "holdout" in by_step
          else "No evaluation split configured."]),
        *([("Data", data_report(by_step["stats"]["metrics"]))] if "stats" in by_step else []),
        *([("Judge", judge_report(config, by_step))] if "judge" in by_step else []),
        *([("Stage 1: re-annotation and query generator", stage1_report(config, by_step))]
          if "d2q" in by_step else []),
        *([("Stage 2: synthesis rounds", stage2_report(config, by_step))] if "synthesize-r1" in by_step else []),
        *([("Embedder experiment", experiment_report(config, by_step, run_dir))]
          if config.experiment is not None else []),
        *([("LLM usage", [llm_usage_table(usage)])] if (usage := llm_usage(by_step)) else []),
        ("Steps", [steps_table(outcomes)]),
        *human_check_sections(run_dir),  # from `relevel review import`; kept when the run rewrites the report
    ]
    return write_report(run_dir / "report.md", f"relevel run: {config.name}", sections)
