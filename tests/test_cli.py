"""The command line as a user runs it: real subprocesses, real files, the real QBQTC data."""

import json

from relevel.data.schema import normalize_text
from relevel.pipeline.io import read_records

from conftest import QBQTC, REPO, pair, relevel_cli, write_config, write_lines


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
    result = relevel_cli("run", "--config", REPO / "configs" / "qbqtc.yaml", "--out", run_dir)
    assert result.returncode == 0, result.stderr
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

    again = relevel_cli("run", "--config", REPO / "configs" / "qbqtc.yaml", "--out", run_dir, "--dry-run")
    assert again.returncode == 0 and again.stdout.count("cached") == 5


def test_demo_needs_no_arguments_and_runs_offline_from_any_folder(tmp_path):
    result = relevel_cli("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = tmp_path / "relevel-demo" / "report.md"
    assert report.is_file() and f"report: {report.relative_to(tmp_path)}" in result.stdout
    assert "not built yet" in result.stdout and "Levels in train (400 pairs)" in result.stdout
    stats = json.loads((tmp_path / "relevel-demo" / "stats" / "manifest.json").read_text())["metrics"]
    levels = {info["level"]: info["count"] for info in stats["train"]["levels"].values()}
    assert sum(levels.values()) == 400 and len(levels) == 4
    assert max(levels[1], levels[2]) < 0.1 * 400 <= min(levels[0], levels[3])  # the intermediate levels are rare
    assert stats["unlabeled"]["documents"] == 300
    again = relevel_cli("demo", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("cached (no work)") == 5
