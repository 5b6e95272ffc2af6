"""The `relevel` command line. Commands stay thin: load the config, build objects, call the library."""

from __future__ import annotations

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
from relevel.errors import Interrupted, RelevelError
from relevel.eval.report import Table, documents_table, level_table, structure_table
from relevel.pipeline import run as run_module
from relevel.pipeline.ingest import IngestSplit
from relevel.pipeline.runner import Pipeline, StepOutcome

app = typer.Typer(help="Graded search-relevance training data made by machine (SSRA).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Inspect and validate input data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
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
                  f"blank lines {report.blank_lines}, duplicate pairs {report.duplicate_pairs}, "
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
    pipeline = Pipeline([step], out, cfg.runtime.chunk_size, cfg.runtime.progress)
    with _resumable():
        [outcome] = pipeline.run(_report_step)
    rejects = run_module.merge_rejects(out, ["validate"])
    m = outcome.manifest["metrics"]
    console.print(f"{m['records']} records, {rejects} rejected (→ {out / 'rejects.jsonl'}), "
                  f"{m['blank_lines']} blank lines, {m.get('duplicate_pairs', 0)} duplicate pairs")


@app.command("run")
def run_command(
    config: ConfigOpt,
    out: OutOpt,
    on_error: OnErrorOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and do nothing.")] = False,
) -> None:
    """Run every built stage of the pipeline; finished steps are cache hits, interrupted ones resume."""
    cfg = _config(config, on_error)
    if dry_run:
        plan = run_module.make_pipeline(cfg, out).plan()
        print_table(Table(f"Plan for {out}", ["step", "status", "inputs", "key"],
                          [[p.step.name, p.status, ", ".join(f"{k}={v}" for k, v in p.step.bind.items())
                            or ", ".join(str(f) for f in p.step.input_files().values()), p.key[:12]]
                           for p in plan]))
        _print_not_built()
        return
    with _resumable():
        result = run_module.run(cfg, out, _report_step)
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
    stats = result.manifest("stats")["metrics"]
    for table in run_module.data_tables(stats):
        print_table(table)
    print_table(run_module.steps_table(result.outcomes))
    console.print(f"rejected rows: {result.rejects}" + (f" (→ {result.run_dir / 'rejects.jsonl'})"
                                                        if result.rejects else ""))
    _print_not_built()
    console.print(f"report: [bold]{result.report}[/bold]")


def _print_not_built() -> None:
    console.print("[yellow]not built yet:[/yellow] " + "; ".join(run_module.NOT_BUILT))


@contextmanager
def _resumable() -> Iterator[None]:
    """Ctrl-C inside a run: committed chunks stay; say how to go on (typer would exit 130 silently)."""
    try:
        yield
    except KeyboardInterrupt:
        command = shlex.join(["relevel", *sys.argv[1:]])
        raise Interrupted(f"interrupted; committed chunks are kept. Resume with: {command}") from None


def main() -> None:
    try:
        app()
    except RelevelError as exc:
        label = "[yellow]stopped:[/yellow]" if isinstance(exc, Interrupted) else "[red]error:[/red]"
        Console(stderr=True).print(f"{label} {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
