"""Human review of a run's synthetic data: export a seeded, stratified sample as an offline browser page and a
CSV; import the reviewer's verdicts into per-level precision, judge-vs-human agreement, a gold file and the
run report's "Human check" section.

Files, all inside the run directory (the export's folder is the caller's choice, RUN/review by default):
  review/review.html, review/review.csv   the export
  review/human-check.json                  the last import's figures (the report is rebuilt from it)
  review/gold.jsonl, review/gold-config.yaml   the reviewed pairs at their human level, and a config reading them
  review/rejects.jsonl                     verdict lines rejected by the last import
  plots/human-check.png
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import yaml

from relevel.config import RunConfig
from relevel.data.readers import detect_format, iter_rows
from relevel.data.validation import Reject
from relevel.errors import InputError, RelevelError
from relevel.eval.plots import human_check
from relevel.eval.report import Table, render_section, report_html
from relevel.eval.review import judge_confusion, overall_precision, precision_by_level, weighted_kappa
from relevel.pipeline.io import atomic_write_text, write_json

SYNTHETIC = "synthetic.jsonl"
REVIEW_DIR = "review"
HUMAN_CHECK = f"{REVIEW_DIR}/human-check.json"
HUMAN_CHECK_PLOT = "plots/human-check.png"
HEADING = "Human check"
DATA_MARKER = "__REVIEW_DATA__"
CSV_COLUMNS = ("id", "query", "doc", "level", "round", "target_level", "target_name", "judge_level",
               "judge_probability")
_SYNTHETIC_FIELDS = ("id", "query", "doc_id", "doc", "level", "probability", "round")


def read_synthetic(run_dir: Path, config: RunConfig) -> list[dict]:
    """The run's kept synthetic queries as review rows (target level, judge level and probability)."""
    path = run_dir / SYNTHETIC
    if not path.is_file():
        raise RelevelError(f"{run_dir}: no {SYNTHETIC}; stage 2 makes it (`relevel stage2` or `relevel run`)")
    rows = []
    for row in iter_rows(path, "jsonl"):
        if row.blank:
            continue
        record = row.data
        if record is None:
            raise InputError(path, row.line, None, row.error or "unreadable row")
        missing = [name for name in _SYNTHETIC_FIELDS if record.get(name) in (None, "")]
        if missing:
            raise InputError(path, row.line, missing[0], "missing")
        try:
            level = config.scale.parse(record["level"])
        except ValueError as exc:
            raise InputError(path, row.line, "level", str(exc)) from None
        # synthetic.jsonl keeps only the queries the judge confirmed: its level is the target, its probability
        # the judge's for that level
        rows.append({"id": str(record["id"]), "query": record["query"], "doc_id": record["doc_id"],
                     "doc": record["doc"], "round": record["round"], "target_level": level, "judge_level": level,
                     "judge_probability": record["probability"]})
    if not rows:
        raise RelevelError(f"{path}: no synthetic pairs to review")
    return rows


@dataclass(frozen=True)
class Export:
    export_id: str
    page: Path
    csv: Path
    summary: Table
    short: list[str]  # levels that had fewer pairs than asked for


def export_review(config: RunConfig, run_dir: Path, out_dir: Path, per_level: int, seed: int) -> Export:
    rows = read_synthetic(run_dir, config)
    sample, summary, short = stratified_sample(rows, config, per_level, seed)
    export_id = hashlib.sha256(json.dumps([config.name, seed, [r["id"] for r in sample]]).encode()).hexdigest()[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "review.html"
    atomic_write_text(page, review_page(config, export_id, sample))
    table = out_dir / "review.csv"
    atomic_write_text(table, review_csv(config, sample))
    return Export(export_id, page, table, summary, short)


def stratified_sample(rows: list[dict], config: RunConfig, per_level: int, seed: int
                      ) -> tuple[list[dict], Table, list[str]]:
    """Up to `per_level` rows per target level, spread evenly over the rounds (a short round's share goes to
    the others), then shuffled so the page does not show the levels in blocks."""
    strata: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for row in rows:
        strata[row["target_level"], row["round"]].append(row)
    rounds = sorted({row["round"] for row in rows})
    rng = random.Random(seed)
    sample, table_rows, short = [], [], []
    for level in config.scale.levels:
        available = {r: len(strata[level.value, r]) for r in rounds}
        taken = allocate(per_level, available)
        for r in rounds:
            sample += rng.sample(strata[level.value, r], taken[r])
        total = sum(taken.values())
        if total < per_level:
            short.append(f"level {level.value} ({level.name}): {total} of {per_level} asked for, all there are")
        table_rows.append([level.value, level.name, *(f"{taken[r]} / {available[r]}" for r in rounds), total])
    rng.shuffle(sample)
    summary = Table(f"Sampled / available per level and round (seed {seed}, {per_level} per level)",
                    ["level", "name", *(f"round {r}" for r in rounds), "sampled"], table_rows)
    return sample, summary, short


def allocate(quota: int, available: dict[int, int]) -> dict[int, int]:
    """Splits `quota` evenly over the strata, never taking more than a stratum has; what a short stratum
    cannot give goes to the others."""
    taken = dict.fromkeys(available, 0)
    open_strata = [s for s, n in available.items() if n]
    while open_strata and sum(taken.values()) < quota:
        share, extra = divmod(quota - sum(taken.values()), len(open_strata))
        for i, stratum in enumerate(open_strata):
            taken[stratum] += min(share + (i < extra), available[stratum] - taken[stratum])
        open_strata = [s for s in open_strata if taken[s] < available[s]]
    return taken


def review_page(config: RunConfig, export_id: str, sample: list[dict]) -> str:
    """The page with its pairs and the scale embedded as JSON. The target and judge levels are left out: the
    reviewer judges blind, so the machine's label cannot anchor the human one."""
    payload = {"export": export_id, "run": config.name,
               "scale": [level.model_dump() for level in config.scale.levels],
               "pairs": [{"id": r["id"], "query": r["query"], "doc": r["doc"]} for r in sample]}
    # "<" as \u003c: no text inside the data can close the <script> element or open a comment
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    template = resources.files("relevel.pipeline").joinpath("review_page.html").read_text(encoding="utf-8")
    return template.replace(DATA_MARKER, data)


def review_csv(config: RunConfig, sample: list[dict]) -> str:
    """The sample for spreadsheets: the reviewer fills the empty `level` column; `review import` reads it back.
    Starts with a byte-order mark so spreadsheet programs read the Chinese text as UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for r in sample:
        writer.writerow([r["id"], r["query"], r["doc"], "", r["round"], r["target_level"],
                         config.scale.name_of(r["target_level"]), r["judge_level"], r["judge_probability"]])
    return "\ufeff" + buffer.getvalue()


@dataclass
class Verdicts:
    """What a verdict file held: the usable verdicts (pair id → human level) and what was not used."""

    levels: dict[str, int] = field(default_factory=dict)
    reviewers: dict[str, str] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    rejected_by_reason: Counter = field(default_factory=Counter)
    duplicates: int = 0  # the same id with the same level again
    conflicting_ids: int = 0  # the same id with another level: both verdicts are left out
    unlabelled: int = 0  # spreadsheet rows whose level is still empty


def read_verdicts(path: Path, known: dict[str, dict], config: RunConfig) -> Verdicts:
    """Verdicts from JSON lines (the page's download) or CSV/TSV (the spreadsheet), each with `id` and `level`.
    A bad line stops the import with file:line:field (data.on_error 'fail') or is rejected and counted."""
    spreadsheet = detect_format(path) in ("csv", "tsv")
    verdicts, first_line = Verdicts(), {}
    conflicting: set[str] = set()

    def reject(line: int, kind: str, field: str | None, reason: str, raw: str) -> None:
        bad = Reject(str(path), line, field, reason, raw)
        if config.data.on_error == "fail":
            raise bad.to_error() from None
        verdicts.rejects.append(bad)
        verdicts.rejected_by_reason[kind] += 1

    for row in iter_rows(path):
        if row.blank:
            continue
        try:
            pair_id, level = _verdict(row.data, row.error, known, config, spreadsheet)
        except _BadVerdict as exc:
            reject(row.line, exc.kind, exc.field, exc.reason, row.raw)
            continue
        if level is None:
            verdicts.unlabelled += 1
        elif pair_id not in first_line:
            first_line[pair_id] = row.line
            verdicts.levels[pair_id] = level
            if isinstance(row.data.get("reviewer"), str) and row.data["reviewer"].strip():
                verdicts.reviewers[pair_id] = row.data["reviewer"].strip()
        elif level == verdicts.levels[pair_id]:
            verdicts.duplicates += 1
        else:
            reject(row.line, "conflicting level", "id", f"duplicate id {pair_id!r} with another level: "
                   f"{verdicts.levels[pair_id]} on line {first_line[pair_id]}, {level} here (the pair is left out)",
                   row.raw)
            conflicting.add(pair_id)
    for pair_id in conflicting:
        del verdicts.levels[pair_id]
        verdicts.reviewers.pop(pair_id, None)
    verdicts.conflicting_ids = len(conflicting)
    return verdicts


class _BadVerdict(Exception):
    def __init__(self, kind: str, field: str | None, reason: str):
        super().__init__(reason)
        self.kind, self.field, self.reason = kind, field, reason


def _verdict(data: dict | None, error: str | None, known: dict[str, dict], config: RunConfig,
             spreadsheet: bool) -> tuple[str, int | None]:
    """(pair id, human level), the level None for a spreadsheet row not labelled yet."""
    if data is None:
        raise _BadVerdict("unreadable", None, error or "unreadable line")
    raw_id = data.get("id")
    if raw_id is None or raw_id == "":
        raise _BadVerdict("missing field", "id", "missing")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise _BadVerdict("wrong type", "id", f"expected a string id, got {raw_id!r}")
    pair_id = str(raw_id).strip()
    if pair_id not in known:
        raise _BadVerdict("unknown id", "id", f"unknown id {pair_id!r}: not a synthetic pair of this run")
    raw_level = data.get("level")
    if spreadsheet and isinstance(raw_level, str) and not raw_level.strip():
        return pair_id, None
    if raw_level is None or raw_level == "":
        raise _BadVerdict("missing field", "level", "missing")
    try:
        return pair_id, config.scale.parse(raw_level)
    except ValueError as exc:
        raise _BadVerdict("bad level", "level", str(exc)) from None


@dataclass(frozen=True)
class Import:
    figures: dict
    gold: Path
    report: Path


def import_verdicts(config: RunConfig, run_dir: Path, verdicts_path: Path) -> Import:
    """Scores the synthetic labels against the reviewer's, saves the reviewed pairs as gold, and puts the
    "Human check" section into the run's report (replacing an earlier one)."""
    if not verdicts_path.is_file():
        raise InputError(verdicts_path, None, None, "file not found")
    pairs = {row["id"]: row for row in read_synthetic(run_dir, config)}
    verdicts = read_verdicts(verdicts_path, pairs, config)
    review_dir = run_dir / REVIEW_DIR
    review_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(review_dir / "rejects.jsonl",
                      "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in verdicts.rejects))
    if not verdicts.levels:
        raise RelevelError(f"{verdicts_path}: no usable verdicts ({len(verdicts.rejects)} rejected, "
                           f"{verdicts.unlabelled} not labelled; see {review_dir / 'rejects.jsonl'})")
    reviewed = [pairs[pair_id] for pair_id in verdicts.levels]
    figures = human_check_figures(config, verdicts_path, verdicts, reviewed)
    write_json(run_dir / HUMAN_CHECK, figures)
    gold = write_gold(config, review_dir, verdicts, reviewed)
    human_check(run_dir / HUMAN_CHECK_PLOT, [level.name for level in config.scale.levels], figures["precision"],
                figures["confusion"])
    return Import(figures, gold, update_report(config, run_dir))


def human_check_figures(config: RunConfig, verdicts_path: Path, verdicts: Verdicts, reviewed: list[dict]) -> dict:
    n = config.scale.num_levels
    targets = [row["target_level"] for row in reviewed]
    judged = [row["judge_level"] for row in reviewed]
    humans = [verdicts.levels[row["id"]] for row in reviewed]
    precision = [{"name": config.scale.name_of(row["level"]), **row} for row in precision_by_level(targets, humans, n)]
    return {
        "verdicts_file": str(verdicts_path.resolve()),
        "imported": datetime.now(UTC).isoformat(timespec="seconds"),
        "reviewers": sorted(set(verdicts.reviewers.values())),
        "reviewed": len(reviewed),
        "rejected": len(verdicts.rejects),
        "rejected_by_reason": dict(verdicts.rejected_by_reason),
        "duplicates": verdicts.duplicates,
        "conflicting_ids": verdicts.conflicting_ids,
        "unlabelled": verdicts.unlabelled,
        "precision": precision,
        "overall": overall_precision(targets, humans),
        "confusion": judge_confusion(judged, humans, n),
        "weighted_kappa": weighted_kappa(judged, humans, n),
        "human_levels": {level.name: humans.count(level.value) for level in config.scale.levels},
    }


def write_gold(config: RunConfig, review_dir: Path, verdicts: Verdicts, reviewed: list[dict]) -> Path:
    """The reviewed pairs at their human level, and beside them a config that reads them as a labelled pair
    file (the run's config with `data` mapped to the gold file's columns), for `judge eval` or `data stats`."""
    lines = []
    for row in reviewed:
        gold = {"id": row["id"], "query": row["query"], "doc_id": row["doc_id"], "doc": row["doc"],
                "level": verdicts.levels[row["id"]], "target_level": row["target_level"],
                "judge_level": row["judge_level"], "judge_probability": row["judge_probability"],
                "round": row["round"]}
        if row["id"] in verdicts.reviewers:
            gold["reviewer"] = verdicts.reviewers[row["id"]]
        lines.append(json.dumps(gold, ensure_ascii=False) + "\n")
    path = review_dir / "gold.jsonl"
    atomic_write_text(path, "".join(lines))
    data = config.data.model_copy(update={"fields": config.data.fields.model_copy(update={"level": "level"}),
                                          "document": config.data.document.model_copy(
                                              update={"template": "{doc}", "optional": ()}),
                                          "doc_id_field": "doc_id", "format": "jsonl"})
    reader = config.model_copy(update={"data": data}).model_dump(mode="json")
    atomic_write_text(review_dir / "gold-config.yaml",
                      "# Reads gold.jsonl: the run's config with `data` mapped to the gold file's columns.\n"
                      + yaml.safe_dump(reader, allow_unicode=True, sort_keys=False))
    return path


def human_check_sections(run_dir: Path) -> list[tuple[str, list[Table | str]]]:
    """The report's "Human check" section from the last import, or nothing before the first one."""
    path = run_dir / HUMAN_CHECK
    if not path.is_file():
        return []
    figures = json.loads(path.read_text(encoding="utf-8"))
    overall = figures["overall"]
    kappa = figures["weighted_kappa"]
    not_used = [f"{figures['rejected']} rejected lines (`{REVIEW_DIR}/rejects.jsonl`)",
                f"{figures['duplicates']} repeated verdicts",
                f"{figures['conflicting_ids']} ids with conflicting levels left out",
                f"{figures['unlabelled']} rows not labelled"]
    blocks: list[Table | str] = [
        f"{figures['reviewed']} synthetic pairs reviewed"
        + (f" by {', '.join(figures['reviewers'])}" if figures["reviewers"] else "")
        + f", imported {figures['imported']} from `{figures['verdicts_file']}`. Not used: " + ", ".join(not_used)
        + ".",
        Table("Precision of the synthetic labels: human level = target level (Wilson 95% interval)",
              ["target level", "name", "reviewed", "human agrees", "precision", "95% low", "95% high"],
              [[p["level"], p["name"], p["reviewed"], p["agree"], *_or_dash(p["precision"], p["low"], p["high"])]
               for p in figures["precision"]]
              + [["all", "", overall["reviewed"], overall["agree"],
                  *_or_dash(overall["precision"], overall["low"], overall["high"])]]),
        Table("Judge level (rows) vs human level (columns)", ["judge \\ human", *figures["human_levels"]],
              [[name, *counts] for name, counts in zip(figures["human_levels"], figures["confusion"])]),
        "Cohen's weighted kappa (linear weights), judge vs human: "
        + (f"{kappa:.3f}." if kappa is not None else "undefined (both use a single level)."),
        f"![human check]({HUMAN_CHECK_PLOT})",
        (f"Gold file: `{REVIEW_DIR}/gold.jsonl` ({figures['reviewed']} pairs at their human level); "
         f"`relevel judge eval --config {REVIEW_DIR}/gold-config.yaml --model judge/model --data "
         f"{REVIEW_DIR}/gold.jsonl --out DIR` scores a judge on it."),
    ]
    return [(HEADING, blocks)]


def _or_dash(*values: float | None) -> list[float | str]:
    return ["–" if v is None else round(v, 4) for v in values]


_SECTION = re.compile(rf"^## {HEADING}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)


def update_report(config: RunConfig, run_dir: Path) -> Path:
    """Puts the "Human check" section into RUN/report.md in place of an earlier one, or at its end."""
    path = run_dir / "report.md"
    report = path.read_text(encoding="utf-8") if path.is_file() else f"# relevel run: {config.name}\n"
    [(heading, blocks)] = human_check_sections(run_dir)
    section = render_section(heading, blocks)
    match = _SECTION.search(report)
    if match is None:
        report = report + "\n" + section
    else:
        following = "\n" if match.end() < len(report) else ""  # keep the blank line before the next section
        report = report[:match.start()] + section + following + report[match.end():]
    atomic_write_text(path, report)
    atomic_write_text(path.with_suffix(".html"), report_html(f"relevel run: {config.name}", report, run_dir))
    return path
