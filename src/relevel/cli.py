"""The `relevel` command line. Commands stay thin: load the config, build objects, call the library."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable

from relevel.config import RunConfig, load_config
from relevel.data.schema import Document, Pair
from relevel.data.stats import document_stats, pair_stats
from relevel.data.validation import OnError, RecordReader, Reject, guess_kind
from relevel.errors import DISK_ERRNOS, DiskError, Interrupted, RelevelError
from relevel.eval.classification import classification_tables
from relevel.eval.report import Table, documents_table, level_table, structure_table
from relevel.pipeline import review
from relevel.pipeline import run as run_module
from relevel.pipeline.ingest import IngestSplit
from relevel.pipeline.io import atomic_write_text, read_records
from relevel.pipeline.judge import JudgePairs
from relevel.pipeline.runner import StepOutcome, pipeline_for

app = typer.Typer(help="Graded search-relevance training data made by machine (SSRA).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Inspect and validate input data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
judge_app = typer.Typer(help="Train, apply and evaluate the relevance judge (score model).", no_args_is_help=True)
app.add_typer(judge_app, name="judge")
embed_app = typer.Typer(help="Evaluate embedders on graded data.", no_args_is_help=True)
app.add_typer(embed_app, name="embed")
review_app = typer.Typer(help="Spot-check synthetic data by hand: a sample in an offline browser page, the "
                         "verdicts back into precision per level and the run's report.", no_args_is_help=True)
app.add_typer(review_app, name="review")

LOG_WIDTH = 400  # a log or a pipe has no width; rich would assume 80 columns and cut wide tables to "…"
console = Console()
if not console.is_terminal:
    console = Console(width=LOG_WIDTH)
DEMO_CONFIG = "builtin:demo/demo.yaml"

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory for artefacts.")]
OnErrorOpt = Annotated[Optional[str], typer.Option(
    "--on-error", help="fail: stop at the first bad record (file:line:field); reject: write bad records to "
    "rejects.jsonl and go on. Default: the config's data.on_error.")]


def print_table(table: Table) -> None:
    rich_table = RichTable(title=table.title, title_justify="left")
    for column in table.columns:
        rich_table.add_column(column)
    for row in table.formatted_rows():
        rich_table.add_row(*row)
    console.print(rich_table)


def _config(path: Path, on_error: str | None) -> RunConfig:
    config = load_config(path)
    if on_error is None:
        return config
    if on_error not in OnError.__args__:
        raise RelevelError(f"--on-error must be one of {', '.join(OnError.__args__)}, got {on_error!r}")
    return config.model_copy(update={"data": config.data.model_copy(update={"on_error": on_error})})


def _report_step(outcome: StepOutcome) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in outcome.manifest.get("counts", {}).items())
    label = {"cached": "cached (no work)", "resume": "resumed", "run": "done"}[outcome.status]
    console.print(f"[green]✓[/green] {outcome.step}: {label} in {outcome.wall_s:.2f}s  {counts}")


@data_app.command("stats")
def data_stats(
    file: Annotated[Path, typer.Argument(help="A JSONL, CSV/TSV or Parquet file.")],
    config: ConfigOpt,
    on_error: OnErrorOpt = None,
) -> None:
    """Level distribution, pairs per query and document, duplicates and lengths of one file."""
    cfg = _config(config, on_error)
    spec = cfg.data.spec()
    kind = guess_kind(file, spec)
    reader = RecordReader(spec, cfg.scale, kind, scope=file.stem, on_error=cfg.data.on_error)
    records, rejects = [], []
    for item in reader.read(file):
        (rejects if isinstance(item, Reject) else records).append(item)
    if kind == "pairs":
        stats = pair_stats(records, cfg.scale)
        print_table(level_table(file.name, stats))
        print_table(structure_table({file.name: stats}))
    else:  # documents, or unlabelled pairs: describe their documents
        print_table(documents_table(file.name, document_stats(
            Document(id=r.doc_id, fields={}, text=r.doc) if isinstance(r, Pair) else r for r in records)))
    report = reader.report
    console.print(f"rows {report.rows}, records {report.records}, rejected {report.rejected}, "
                  f"blank lines {report.blank_lines}, truncated fields {sum(report.truncated.values())}, "
                  f"duplicate pairs {report.duplicate_pairs}, "
                  f"conflicting labels {report.conflicting_pairs}")
    if rejects:
        print_table(Table(f"Rejected rows (first {min(10, len(rejects))} of {len(rejects)})",
                          ["line", "field", "reason"], [[r.line, r.field or "", r.reason] for r in rejects[:10]]))


@data_app.command("validate")
def data_validate(
    file: Annotated[Path, typer.Argument(help="A JSONL, CSV/TSV or Parquet file.")],
    config: ConfigOpt,
    out: OutOpt,
    on_error: OnErrorOpt = None,
) -> None:
    """Validate one file into typed records under OUT (resumable); bad rows stop or go to OUT/rejects.jsonl."""
    cfg = _config(config, on_error)
    spec = cfg.data.spec()
    step = IngestSplit(name="validate", path=file.resolve(), kind=guess_kind(file, spec), scope=file.stem,
                       spec=spec, scale=cfg.scale, on_error=cfg.data.on_error)
    pipeline = pipeline_for([step], out, cfg.runtime)
    with _resumable():
        [outcome] = pipeline.run(_report_step)
    rejects = run_module.merge_rejects(out, ["validate"])
    m = outcome.manifest["metrics"]
    console.print(f"{m['records']} records, {rejects} rejected (→ {out / 'rejects.jsonl'}), "
                  f"{m['blank_lines']} blank lines, {m.get('duplicate_pairs', 0)} duplicate pairs, "
                  f"{sum(m.get('truncated', {}).values())} fields cut to {cfg.data.max_field_chars} characters")


ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="A trained judge's folder (RUN/judge/model).")]
DataOpt = Annotated[Path, typer.Option("--data", "-d", help="Pairs to judge: JSONL, CSV/TSV or Parquet.")]


@judge_app.command("train")
def judge_train(config: ConfigOpt, out: OutOpt, on_error: OnErrorOpt = None) -> None:
    """Train the judge on the config's train split (tuned on a query-disjoint slice of it); report on dev."""
    _run_until(_config(config, on_error), out, ("judge-dev", "judge"), run_module.judge_report, "judge")


def _run_until(cfg: RunConfig, out: Path, last_steps: tuple[str, str], report, artefact: str) -> None:
    """Runs the pipeline up to `last_steps[0]` (needs a dev split) or else `last_steps[1]`; prints the
    section `report` makes and where the step `artefact`'s model is."""
    until = last_steps[0] if "dev" in cfg.data.splits() else last_steps[1]
    with _resumable():
        result = run_module.run(cfg, out, _report_step, until=until)
    _print_blocks(report(cfg, {o.step: o.manifest for o in result.outcomes}))
    console.print(f"{artefact}: [bold]{out / artefact / 'model'}[/bold]   report: {result.report}")


def _judge_file(cfg: RunConfig, model: Path, data: Path, out: Path) -> dict:
    """Judges every pair of DATA into OUT (resumable); returns the judging step's manifest."""
    if not model.is_dir():
        raise RelevelError(f"{model}: no such judge folder")
    spec = cfg.data.spec()
    kind = guess_kind(data, spec)
    steps = [IngestSplit(name="ingest", path=data.resolve(), kind=kind, scope=data.stem, spec=spec,
                         scale=cfg.scale, on_error=cfg.data.on_error),
             JudgePairs(name="judge", bind={"pairs": "ingest/records"}, model=model.resolve(), scale=cfg.scale,
                        batch_size=cfg.runtime.inference_batch_size)]
    with _resumable():
        outcomes = pipeline_for(steps, out, cfg.runtime).run(_report_step)
    rejects = run_module.merge_rejects(out, ["ingest"])
    names = [level.name for level in cfg.scale.levels]
    lines = [json.dumps({**r, "level_name": names[r["level"]]}, ensure_ascii=False) + "\n"
             for r in read_records(out / "judge" / "predictions")]
    atomic_write_text(out / "predictions.jsonl", "".join(lines))
    console.print(f"{len(lines)} pairs judged → {out / 'predictions.jsonl'}; {rejects} rejected rows")
    return outcomes[-1].manifest


@judge_app.command("predict")
def judge_predict(config: ConfigOpt, model: ModelOpt, data: DataOpt, out: OutOpt, on_error: OnErrorOpt = None) -> None:
    """Level and calibrated probabilities for every pair of DATA → OUT/predictions.jsonl."""
    _judge_file(_config(config, on_error), model, data, out)


@judge_app.command("eval")
def judge_eval(config: ConfigOpt, model: ModelOpt, data: DataOpt, out: OutOpt, on_error: OnErrorOpt = None) -> None:
    """Accuracy, macro-F1, per-level P/R/F1, confusion matrix, QWK and ECE of the judge on labelled DATA."""
    cfg = _config(config, on_error)
    metrics = _judge_file(cfg, model, data, out)["metrics"]
    if "macro_f1" not in metrics:
        raise RelevelError(f"{data}: no labelled pairs (field '{cfg.data.fields.level}'), nothing to evaluate")
    for table in classification_tables(metrics, cfg.scale, f"Judge on {data.name}"):
        print_table(table)


@app.command("stage1")
def stage1(config: ConfigOpt, out: OutOpt, on_error: OnErrorOpt = None) -> None:
    """Judge, then link documents to real queries, re-annotate the links, build D2Q data, train the query
    generator and (with a dev split) measure its control accuracy with a held-out judge."""
    _run_until(_config(config, on_error), out, ("control", "generator"), run_module.stage1_report, "generator")


@app.command("stage2")
def stage2(config: ConfigOpt, out: OutOpt, on_error: OnErrorOpt = None) -> None:
    """Judge and stage 1, then the synthesis rounds: the generator writes queries for the unlabelled documents
    at the levels the data lacks, the judge keeps those at their target level, the generator retrains on them.
    Writes OUT/synthetic.jsonl."""
    cfg = _config(config, on_error)
    last = run_module.last_round_step(cfg, "generator")
    if last is None:
        raise RelevelError("stage 2 needs `synthesis.rounds` ≥ 1 and an `unlabeled` split in the config")
    _run_until(cfg, out, (run_module.last_round_step(cfg, "control"), last), run_module.stage2_report, last)
    console.print(f"synthetic queries: [bold]{out / 'synthetic.jsonl'}[/bold]")


@app.command("experiment")
def experiment(config: ConfigOpt, out: OutOpt, on_error: OnErrorOpt = None) -> None:
    """The embedder experiment: judge, stage 1, stage 2, then one embedder per training set and seed, each
    evaluated on dev beside the zero-shot base and BM25. Steps already done in OUT (e.g. by `relevel run`
    with the same settings) are reused; an interrupted experiment resumes at the step it stopped in."""
    cfg = _config(config, on_error)
    if cfg.experiment is None:
        raise RelevelError(f"{config}: no `experiment` section (see configs/qbqtc-ablation-quick.yaml)")
    with _resumable():
        result = run_module.run(cfg, out, _report_step)
    _finish(result)


@embed_app.command("eval")
def embed_eval(config: ConfigOpt, model: Annotated[Path, typer.Option("--model", "-m", help="A trained "
               "embedder's folder (sentence-transformers format).")], data: DataOpt, out: OutOpt,
               distractors: Annotated[Optional[Path], typer.Option(
                   "--distractors", help="Documents to add to the retrieval corpus (relevant to no query of DATA); "
                   "default: the config's `data.distractors`, if any.")] = None,
               on_error: OnErrorOpt = None) -> None:
    """NDCG@5/@10, recall@10 (full-corpus retrieval and re-ranking), AP at each level threshold and Spearman
    of an embedder on labelled DATA; writes OUT/metrics.json."""
    from relevel.pipeline.train_embedder import EvaluateEmbedder

    cfg = _config(config, on_error)
    if not (model / "modules.json").is_file():
        raise RelevelError(f"{model}: not a sentence-transformers model folder (no modules.json)")
    distractors = distractors.resolve() if distractors is not None else cfg.data.distractors
    ingest = [IngestSplit(name=f"ingest{suffix}", path=path, kind=kind, scope=path.stem, spec=cfg.data.spec(),
                          scale=cfg.scale, on_error=cfg.data.on_error)
              for suffix, path, kind in (("", data.resolve(), "pairs"), ("-distractors", distractors, "documents"))
              if path is not None]
    bind = {"pairs": "ingest/records", **({"distractors": "ingest-distractors/records"} if distractors else {})}
    steps = [*ingest, EvaluateEmbedder(name="eval", bind=bind, model=model.resolve(), scale=cfg.scale,
                                       config=cfg.embedder)]
    with _resumable():
        outcomes = pipeline_for(steps, out, cfg.runtime).run(_report_step)
    metrics = outcomes[-1].manifest["metrics"]
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    corpus = outcomes[-1].manifest["counts"]["corpus"]
    print_table(Table(f"Embedder on {data.name} (retrieval corpus: {corpus} documents)", ["metric", "value"],
                      [[k, v] for k, v in metrics.items()]))
    console.print(f"metrics: {out / 'metrics.json'}")


RunOpt = Annotated[Path, typer.Option("--run", "-r", help="A run directory with synthetic.jsonl (stage 2).")]


def _run_config(run: Path, on_error: str | None = None) -> RunConfig:
    if not (run / "config.yaml").is_file():
        raise RelevelError(f"{run}: not a run directory (no config.yaml); make one with `relevel run`")
    return _config(run / "config.yaml", on_error)


@review_app.command("export")
def review_export(
    run: RunOpt,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for review.html and review.csv "
                                                "(default: RUN/review).")] = None,
    per_level: Annotated[int, typer.Option("--per-level", min=1, help="Pairs per target level, spread evenly "
                                           "over the rounds.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """A seeded sample of the synthetic pairs, stratified by level and round, as a self-contained page (open it
    in a browser, label with the keyboard, download the verdicts) and a CSV for spreadsheets."""
    export = review.export_review(_run_config(run), run, out or run / review.REVIEW_DIR, per_level, seed)
    print_table(export.summary)
    for note in export.short:
        console.print(f"[yellow]short:[/yellow] {note}")
    console.print(f"page: [bold]{export.page}[/bold] ({export.page.stat().st_size / 1e6:.2f} MB)   "
                  f"spreadsheet: {export.csv}   export id {export.export_id}")


@review_app.command("import")
def review_import(
    verdicts: Annotated[Path, typer.Argument(help="Verdicts: the page's download (JSONL) or the filled-in CSV.")],
    run: RunOpt,
    on_error: OnErrorOpt = None,
) -> None:
    """Precision of the synthetic labels per level (Wilson 95%), judge-vs-human confusion and weighted kappa;
    writes RUN/review/gold.jsonl and the "Human check" section of RUN/report.md."""
    result = review.import_verdicts(_run_config(run, on_error), run, verdicts)
    [(_, blocks)] = review.human_check_sections(run)
    _print_blocks([b for b in blocks if isinstance(b, Table) or not b.startswith("![")])  # the plot is a file
    console.print(f"plot: {run / review.HUMAN_CHECK_PLOT}   gold: {result.gold}   "
                  f"report: [bold]{result.report}[/bold]")


@app.command("run")
def run_command(
    config: ConfigOpt,
    out: OutOpt,
    on_error: OnErrorOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and do nothing.")] = False,
    until: Annotated[Optional[str], typer.Option("--until", help="Stop after this step (see --dry-run for "
                                                 "the steps).")] = None,
) -> None:
    """Run every built stage of the pipeline; finished steps are cache hits, interrupted ones resume."""
    cfg = _config(config, on_error)
    if dry_run:
        print_table(run_module.plan_table(out, run_module.estimate_run(cfg, out, until)))
        return
    with _resumable():
        result = run_module.run(cfg, out, _report_step, until)
    _finish(result)


@app.command("demo")
def demo(out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("relevel-demo")) -> None:
    """Run the pipeline on the embedded sample (4-level short-video search, Chinese); no arguments needed."""
    cfg = load_config(DEMO_CONFIG)
    console.print(f"relevel demo: embedded sample '{cfg.name}' → {out}")
    with _resumable():
        result = run_module.run(cfg, out, _report_step)
    _finish(result)


def _finish(result: run_module.RunResult) -> None:
    by_step = {o.step: o.manifest for o in result.outcomes}
    if "stats" in by_step:
        _print_blocks(run_module.data_report(by_step["stats"]["metrics"]))
    if "judge" in by_step:
        _print_blocks(run_module.judge_report(result.config, by_step))
    if "d2q" in by_step:
        _print_blocks(run_module.stage1_report(result.config, by_step))
    if "synthesize-r1" in by_step:
        _print_blocks(run_module.stage2_report(result.config, by_step))
    if result.config.experiment is not None:
        _print_blocks([b for b in run_module.experiment_report(result.config, by_step, result.run_dir)
                       if isinstance(b, Table)])
    print_table(run_module.steps_table(result.outcomes))
    console.print(f"rejected rows: {result.rejects}" + (f" (→ {result.run_dir / 'rejects.jsonl'})"
                                                        if result.rejects else ""))
    console.print(f"report: [bold]{result.report}[/bold]")


def _print_blocks(blocks: list) -> None:
    for block in blocks:
        print_table(block) if isinstance(block, Table) else console.print(block)


@contextmanager
def _resumable() -> Iterator[None]:
    """Ctrl-C inside a run: committed chunks stay; say how to go on (typer would exit 130 silently)."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; committed chunks are kept. Resume with: {_command_line()}") from None


def _command_line() -> str:
    return shlex.join(["relevel", *sys.argv[1:]])


def main() -> None:
    try:
        try:
            app()
        except OSError as exc:  # a full disk or a folder we may not write to: no traceback, the path and a way on
            if exc.errno not in DISK_ERRNOS:
                raise
            raise DiskError.from_os_error(exc, _command_line()) from None
    except RelevelError as exc:
        label = "[yellow]stopped:[/yellow]" if isinstance(exc, Interrupted) else "[red]error:[/red]"
        Console(stderr=True).print(f"{label} {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
