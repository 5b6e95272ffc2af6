"""The command line as a user runs it: real subprocesses (in-process where only the exit code and the message
matter), real files, the real QBQTC data."""

import json
import subprocess
import sys

import pytest

from conftest import QBQTC, REPO, pair, relevel_cli, relevel_main, write_config, write_lines, write_table
from relevel.config import RewriteConfig, load_config
from relevel.data.schema import normalize_text
from relevel.models.judge.config import CPU_SECONDS_PER_TRAINING_PAIR
from relevel.pipeline.io import read_records
from relevel.pipeline.run import estimate_run, plan_table


def bad_file(tmp_path):
    missing_title = {k: v for k, v in pair(3).items() if k != "title"}
    return write_lines(tmp_path / "bad.jsonl", [pair(1), '{"id": 2, "query": ', missing_title,
                                                pair(4, level="7"), pair(5)])


def test_data_stats_on_qbqtc_prints_the_real_distribution():
    result = relevel_cli("data", "stats", QBQTC / "train.json", "--config", REPO / "configs" / "qbqtc.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Levels in train.json (15129 pairs)" in out
    for level, name, count in [(0, "poor", 3638), (1, "partial", 9601), (2, "high", 1890)]:
        assert f"│ {level}     │ {name}" in out and f"│ {count}" in out
    assert "duplicate-query rate" in out and "rejected 0" in out


def test_bad_file_gives_one_clear_error_by_default(tmp_path):
    config = write_config(tmp_path / "c.yaml", "bad.jsonl")
    path = bad_file(tmp_path)
    for command in (["data", "stats", path, "--config", config],
                    ["data", "validate", path, "--config", config, "--out", tmp_path / "run"],
                    ["run", "--config", config, "--out", tmp_path / "run2"]):
        result = relevel_cli(*command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert f"error: {path}:2: bad JSON" in result.stderr.replace("\n", "")


def test_reject_mode_writes_three_counted_rejects(tmp_path):
    config = write_config(tmp_path / "c.yaml", "bad.jsonl")
    path = bad_file(tmp_path)
    result = relevel_cli("data", "validate", path, "--config", config, "--out", tmp_path / "run",
                         "--on-error", "reject")
    assert result.returncode == 0, result.stderr
    assert "2 records, 3 rejected" in result.stdout
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(2, None), (3, "title"), (4, "label")]
    assert all(r["path"] == str(path) and r["reason"] and r["step"] == "validate" for r in rejects)

    stats = relevel_cli("data", "stats", path, "--config", config, "--on-error", "reject")
    assert stats.returncode == 0 and "rejected 3" in stats.stdout and "outside the scale" in stats.stdout


def test_bad_option_and_bad_config_exit_2_without_traceback(tmp_path):
    config = write_config(tmp_path / "c.yaml", "bad.jsonl", extra="extra_key: 1\n")
    result = relevel_cli("run", "--config", config, "--out", tmp_path / "run")
    assert result.returncode == 2 and "key 'extra_key': unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    config.write_text(config.read_text().replace("extra_key: 1\n", ""))
    result = relevel_cli("run", "--config", config, "--out", tmp_path / "run", "--on-error", "skip")
    assert result.returncode == 2 and "--on-error must be one of fail, reject" in result.stderr


def test_qbqtc_run_keeps_evaluation_data_out_of_training(tmp_path):
    """AMENDMENTS: no normalised dev query or title reaches any training file."""
    run_dir = tmp_path / "run"
    result = relevel_cli("run", "--config", REPO / "configs" / "qbqtc.yaml", "--out", run_dir, "--until", "stats")
    assert result.returncode == 0, result.stderr
    assert "## Judge" not in (run_dir / "report.md").read_text()
    dev = list(read_records(run_dir / "ingest-dev" / "records"))
    dev_queries = {normalize_text(r["query"]) for r in dev}
    dev_titles = {normalize_text(r["doc"]) for r in dev}
    train = list(read_records(run_dir / "holdout" / "train"))
    pool = list(read_records(run_dir / "holdout" / "unlabeled"))
    assert len(train) > 14_000 and len(pool) == 7485
    assert not {normalize_text(r["query"]) for r in train} & dev_queries
    assert not {normalize_text(r["doc"]) for r in train} & dev_titles
    assert not {normalize_text(r["text"]) for r in pool} & dev_titles
    removed = list(read_records(run_dir / "holdout" / "removed"))
    assert len(removed) == 15129 - len(train) > 0
    assert "Evaluation data kept out of training" in (run_dir / "report.md").read_text()
    # the data summary counts what each model's token limit cuts: QBQTC's short titles fit its 64 tokens
    limits = json.loads((run_dir / "stats" / "manifest.json").read_text())["metrics"]["train"]["token_limits"]
    assert {(r["setting"], r["texts"]) for r in limits} == {
        ("judge.max_length", "documents"), ("judge.max_length", "queries"),
        ("generator.max_document_tokens", "documents"), ("generator.max_query_tokens", "queries")}
    assert all(r["limit"] == 64 and r["share_cut"] < 0.05 for r in limits if r["setting"] == "judge.max_length")
    assert "Texts longer than a model's token limit" in result.stdout

    again = relevel_cli("run", "--config", REPO / "configs" / "qbqtc.yaml", "--out", run_dir, "--dry-run")
    assert again.returncode == 0 and again.stdout.count("cached") == 5 and "│ judge " in again.stdout
    estimates = {e.planned.step.name: e for e in estimate_run(load_config(REPO / "configs" / "qbqtc.yaml"), run_dir)}
    assert estimates["judge"].records == len(train)  # a finished step's real counts size the steps after it
    assert estimates["holdout"].seconds == 0 and estimates["judge"].seconds > 0
    wrong = relevel_cli("run", "--config", REPO / "configs" / "qbqtc.yaml", "--out", run_dir, "--until", "stage9")
    assert wrong.returncode == 2 and "has the steps ingest-train" in wrong.stderr


def test_dry_run_projects_records_model_calls_llm_requests_and_time(tmp_path):
    """AMENDMENTS: the plan gives record counts, judge calls, LLM tokens and a projected time."""
    config = load_config(REPO / "configs" / "qbqtc-llm.yaml")
    estimates = {e.planned.step.name: e for e in estimate_run(config, tmp_path / "run")}
    assert estimates["ingest-train"].records == 15129 and estimates["ingest-unlabeled"].records == 7485
    linking = config.linking
    links = (15129 + 7485) * (linking.top + linking.middle + linking.random)  # every document of both splits
    assert estimates["link"].work.outputs == {"links": links} and estimates["reannotate"].work.judge_calls == links
    requested = config.synthesis.documents_per_round * config.synthesis.candidates
    assert estimates["synthesize-r1"].work.generated == requested == estimates["judge-r1"].work.judge_calls
    assert estimates["judge"].seconds == pytest.approx(15129 * CPU_SECONDS_PER_TRAINING_PAIR["embedding-features"])
    assert estimates["embed-real-s0"].records == config.embedder.steps
    # a causal-LM generator costs 12-30x the seq2seq default per query and per example on CPU (RESULTS.md)
    causal = config.model_copy(update={"generator": config.generator.model_copy(update={"backend": "causal-lm"})})
    slow = {e.planned.step.name: e for e in estimate_run(causal, tmp_path / "run")}
    for step in ("generator", "synthesize-r1", "control", "generator-vanilla", "synthesize-vanilla"):
        assert slow[step].seconds > 5 * estimates[step].seconds > 0, step
    # the 12-layer cross-encoder judge trains 2 epochs (3x) and judges pair by pair (6x) on CPU (RESULTS.md)
    cross = config.model_copy(update={"judge": config.judge.model_copy(update={"backend": "cross-encoder"})})
    slow = {e.planned.step.name: e for e in estimate_run(cross, tmp_path / "run")}
    for step, factor in (("judge", 2.5), ("judge-heldout", 2.5), ("judge-dev", 5), ("reannotate", 5),
                         ("judge-r1", 5), ("judge-vanilla", 5), ("control", 1.5)):
        assert slow[step].seconds > factor * estimates[step].seconds > 0, step
    # LLM steps: requests and tokens, and no time (the server's speed is not known)
    prompt_only = estimates["synthesize-prompt-only"]
    assert prompt_only.llm_requests == prompt_only.work.generated // config.synthesis.candidates > 0
    assert prompt_only.llm_tokens > prompt_only.llm_requests * config.llm.max_tokens and prompt_only.seconds is None
    assert estimates["filter-r1"].llm_requests > 0 and estimates["reannotate"].llm_requests == 0
    total = plan_table(tmp_path / "run", list(estimates.values())).rows[-1]
    assert total[0] == "total" and total[3] == sum(e.work.judge_calls for e in estimates.values() if e.work)
    assert total[6] == sum(e.llm_tokens for e in estimates.values()) and "unknown" in total[7]
    rewriting = config.model_copy(update={"rewrite": RewriteConfig(fields=("title",), llm=config.llm)})
    rewrite = {e.planned.step.name: e for e in estimate_run(rewriting, tmp_path / "run")}["rewrite-train"]
    assert rewrite.llm_requests == 15129 and rewrite.llm_tokens > 15129 * config.llm.max_tokens


def test_demo_needs_no_arguments_and_runs_offline_from_any_folder(demo_dir):
    run_dir = demo_dir / "relevel-demo"
    stats = json.loads((run_dir / "stats" / "manifest.json").read_text())["metrics"]
    levels = {info["level"]: info["count"] for info in stats["train"]["levels"].values()}
    assert sum(levels.values()) == 400 and len(levels) == 4
    assert max(levels[1], levels[2]) < 0.1 * 400 <= min(levels[0], levels[3])  # the intermediate levels are rare
    assert stats["unlabeled"]["documents"] == 300
    judged = json.loads((run_dir / "judge-dev" / "manifest.json").read_text())["metrics"]
    assert judged["accuracy"] > judged["majority_rate"] + 0.15  # the judge learned, on unseen queries
    assert "## Judge" in (run_dir / "report.md").read_text()
    again = relevel_cli("demo", cwd=demo_dir)
    steps = len(list(run_dir.glob("*/manifest.json")))
    assert again.returncode == 0 and again.stdout.count("cached (no work)") == steps >= 29


def test_judge_train_predict_and_eval_commands(demo_dir, tmp_path):
    run_dir, demo_config = demo_dir / "relevel-demo", "builtin:demo/demo.yaml"
    train = relevel_cli("judge", "train", "--config", demo_config, "--out", run_dir)
    assert train.returncode == 0 and train.stdout.count("cached (no work)") == 7  # the demo's steps, shared
    assert "temperature" in train.stdout and "Judge on dev" in train.stdout
    model = run_dir / "judge" / "model"

    dev = [json.loads(line) for line in (REPO / "src" / "relevel" / "demo" / "dev.jsonl").read_text().splitlines()]
    unlabelled = write_lines(tmp_path / "pairs.jsonl", [{k: v for k, v in r.items() if k != "label"}
                                                        for r in dev[:20]])
    predict = relevel_cli("judge", "predict", "--config", demo_config, "--model", model, "--data", unlabelled,
                          "--out", tmp_path / "pred")
    assert predict.returncode == 0, predict.stderr
    rows = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert [r["query"] for r in rows] == [r["query"] for r in dev[:20]]
    for row in rows:
        assert abs(sum(row["probs"]) - 1) < 1e-4 and row["level"] == max(range(4), key=row["probs"].__getitem__)
        assert row["level_name"] in {"irrelevant", "related", "mostly", "perfect"}

    no_labels = relevel_cli("judge", "eval", "--config", demo_config, "--model", model, "--data", unlabelled,
                            "--out", tmp_path / "eval0")
    assert no_labels.returncode == 2 and "no labelled pairs" in no_labels.stderr
    labelled = write_lines(tmp_path / "labelled.jsonl", dev[:60])
    evaluated = relevel_cli("judge", "eval", "--config", demo_config, "--model", model, "--data", labelled,
                            "--out", tmp_path / "eval")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Judge on labelled.jsonl" in evaluated.stdout and "macro-F1" in evaluated.stdout
    missing = relevel_cli("judge", "predict", "--config", demo_config, "--model", tmp_path / "nope", "--data",
                          labelled, "--out", tmp_path / "x")
    assert missing.returncode == 2 and "no such judge folder" in missing.stderr


FORMATS = [".jsonl", ".csv", ".tsv", ".parquet"]
# kind -> (rows, template, expected bad row (1-based data row), field, reason)
BAD_INPUT = {
    "level outside the scale": ([pair(1), pair(2, level="7")], None, 2, "label", "outside the scale 0..3"),
    "non-integer level": ([pair(1), pair(2, level="1.5")], None, 2, "label", "expected an integer level"),
    "empty query": ([pair(1), pair(2, query="")], None, 2, "query", "empty"),
    "duplicate id": ([pair(1), pair(1, query="另一个")], None, 2, "id", "duplicate id"),
    "template names a missing field": ([pair(1), pair(2)], "{title} {video_text} {tags}", 1, "tags", "missing"),
}


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("kind", sorted(BAD_INPUT))
def test_bad_input_in_every_format_stops_naming_file_line_and_field_or_is_a_counted_reject(tmp_path, kind, suffix):
    rows, template, bad_row, field, reason = BAD_INPUT[kind]
    data = write_table(tmp_path / f"train{suffix}", [{**r, "label": str(r["label"])} for r in rows])
    config = write_config(tmp_path / "c.yaml", data)
    if template:
        config.write_text(config.read_text().replace("Title:{title};Video_text:{video_text}", template))
    line = bad_row + (suffix in (".csv", ".tsv"))  # the header is line 1
    code, _, stderr = relevel_main("data", "validate", data, "--config", config, "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in stderr
    assert f"error: {data}:{line}: field '{field}': " in " ".join(stderr.split()) and reason in stderr

    code, _, stderr = relevel_main("data", "validate", data, "--config", config, "--out", tmp_path / "run2",
                                "--on-error", "reject")
    assert code == 0, stderr
    rejects = [json.loads(x) for x in (tmp_path / "run2" / "rejects.jsonl").read_text().splitlines()]
    expected = len(rows) if template else 1  # a missing template field fails every row
    assert len(rejects) == expected and (rejects[0]["line"], rejects[0]["field"]) == (line, field)
    manifest = json.loads((tmp_path / "run2" / "validate" / "manifest.json").read_text())
    assert manifest["metrics"]["rejected"] == expected
    assert manifest["metrics"]["records"] == len(rows) - expected


def test_wide_tables_print_whole_into_a_log():
    """Piped output (a log, CI) gets whole tables: rich would otherwise assume 80 columns and cut cells to '…'."""
    code = ("from relevel.cli import print_table; from relevel.eval.report import Table; "
            "print_table(Table('wide', [f'metric number {i}' for i in range(20)], [[f'{i}.123 ± 0.004' "
            "for i in range(20)]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "…" not in out and "metric number 19" in out and "19.123 ± 0.004" in out


def test_tables_show_a_missing_value_as_a_dash():
    from relevel.eval.report import Table

    table = Table("yields", ["level", "yield"], [["poor", 0.89681], ["partial", None]])
    assert table.formatted_rows() == [["poor", "0.8968"], ["partial", "–"]]
    assert "| partial | – |" in table.to_markdown()
