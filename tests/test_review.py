"""Review of synthetic data: the agreement statistics on hand-computed numbers, the stratified export, verdict
validation, and the whole loop in a real headless Chromium (label, reload, download, import, report)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from conftest import relevel_cli, write_lines
from relevel.cli import app
from relevel.config import load_config, resolve_path
from relevel.data.schema import text_id
from relevel.data.validation import RecordReader
from relevel.errors import InputError
from relevel.eval.review import judge_confusion, overall_precision, precision_by_level, weighted_kappa, wilson_interval
from relevel.pipeline import review
from relevel.pipeline.run import write_run_report

CHROMIUM = Path("/usr/bin/chromium")
# without the background-networking flags Chromium stalls on a machine with no network
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE_QUERY = '</script><script>document.title="pwned"</script> & <!-- 引号 "'
# (level, round) -> synthetic queries; level 1 is short of 6, level 3's round 2 gives its share to round 1
STRATA = {(0, 1): 5, (0, 2): 5, (1, 1): 2, (1, 2): 1, (2, 1): 5, (2, 2): 5, (3, 1): 5, (3, 2): 1}


def cli(*args: object) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def make_run(run_dir: Path) -> dict[str, dict]:
    """A run folder as stage 2 leaves it (config.yaml, report.md, synthetic.jsonl) on the demo's 4-level scale,
    with queries made up for the demo's unlabelled documents; returns the synthetic records by id."""
    config = load_config("builtin:demo/demo.yaml")
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True))
    (run_dir / "report.md").write_text("# relevel run: demo\n\n## Steps\n\nnone\n")
    documents = [json.loads(line) for line in resolve_path("builtin:demo/unlabeled.jsonl", None).open()]
    records = []
    for (level, round_), count in STRATA.items():
        for k in range(count):
            document = documents[len(records)]
            doc = f"Title:{document['title']};Video_text:{document['video_text']}"
            # level 1 is sampled whole, so the hostile query is always on the page
            query = HOSTILE_QUERY if (level, round_, k) == (1, 1, 0) else f"{document['title'][:6]} 查询{k}"
            records.append({"id": f"r{round_}-{text_id(doc)}-{level}-{k}", "query": query, "doc_id": text_id(doc),
                            "doc": doc, "level": level, "probability": 0.9, "round": round_, "generator": "g"})
    write_lines(run_dir / "synthetic.jsonl", records)
    return {r["id"]: r for r in records}


# --- statistics, on numbers computed by hand --------------------------------------------------------------

def test_wilson_interval_matches_hand_computed_values():
    # 8/10: centre (0.8 + 1.96²/20) / (1 + 1.96²/10) = 0.7167, half-width 1.96·√(0.016 + 0.009604)/1.38415 = 0.2266
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(3, 5) == pytest.approx((0.2307, 0.8824), abs=1e-4)
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)  # never below 0, unlike p ± 1.96·se
    assert wilson_interval(5, 5)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) is None


def test_precision_confusion_and_weighted_kappa_by_hand():
    targets = judged = [0, 0, 2, 2]
    humans = [0, 1, 2, 1]
    rows = precision_by_level(targets, humans, 3)
    assert [(r["reviewed"], r["agree"], r["precision"]) for r in rows] == [(2, 1, 0.5), (0, 0, None), (2, 1, 0.5)]
    assert rows[1]["low"] is None and rows[0]["low"] == pytest.approx(0.0945, abs=1e-4)
    assert overall_precision(targets, humans)["precision"] == 0.5
    assert judge_confusion(judged, humans, 3) == [[1, 1, 0], [0, 0, 0], [0, 1, 1]]
    # linear weights |i−j|: observed disagreement 1 + 1 = 2; expected Σ|i−j|·rowᵢ·colⱼ/n with judge rows (2, 0, 2)
    # and human columns (1, 2, 1): (1·2·2 + 2·2·1 + 2·2·1 + 1·2·2) / 4 = 4
    assert weighted_kappa(judged, humans, 3) == pytest.approx(1 - 2 / 4)
    assert weighted_kappa([0, 1, 2], [0, 1, 2], 3) == pytest.approx(1.0)
    assert weighted_kappa([0, 0], [0, 0], 3) is None  # chance agreement is already perfect: undefined
    assert weighted_kappa([], [], 3) is None and judge_confusion([], [], 2) == [[0, 0], [0, 0]]


def test_allocation_spreads_each_level_over_rounds_and_refills_short_ones():
    assert review.allocate(200, {1: 2936, 2: 263}) == {1: 100, 2: 100}
    assert review.allocate(6, {1: 5, 2: 1}) == {1: 5, 2: 1}
    assert review.allocate(10, {1: 2, 2: 50}) == {1: 2, 2: 8}
    assert review.allocate(5, {1: 3, 2: 3, 3: 0}) == {1: 3, 2: 2, 3: 0}
    assert review.allocate(7, {1: 1, 2: 1}) == {1: 1, 2: 1}


# --- export -------------------------------------------------------------------------------------------------

def test_export_is_seeded_stratified_and_says_what_is_short(tmp_path):
    records = make_run(tmp_path / "run")
    result = cli("review", "export", "--run", tmp_path / "run", "--per-level", 6)
    assert "short: level 1 (related): 3 of 6 asked for" in " ".join(result.output.split())
    rows = list(csv.DictReader((tmp_path / "run" / "review" / "review.csv").open(encoding="utf-8-sig")))
    sampled = {(records[r["id"]]["level"], records[r["id"]]["round"]) for r in rows}
    counts = {stratum: sum((records[r["id"]]["level"], records[r["id"]]["round"]) == stratum for r in rows)
              for stratum in sampled}
    assert counts == {(0, 1): 3, (0, 2): 3, (1, 1): 2, (1, 2): 1, (2, 1): 3, (2, 2): 3, (3, 1): 5, (3, 2): 1}
    assert all(r["level"] == "" and r["target_level"] == r["judge_level"] for r in rows)
    first = [r["id"] for r in rows]
    cli("review", "export", "--run", tmp_path / "run", "--per-level", 6, "--out", tmp_path / "again")
    again = [r["id"] for r in csv.DictReader((tmp_path / "again" / "review.csv").open(encoding="utf-8-sig"))]
    cli("review", "export", "--run", tmp_path / "run", "--per-level", 6, "--seed", 1, "--out", tmp_path / "seed1")
    other = [r["id"] for r in csv.DictReader((tmp_path / "seed1" / "review.csv").open(encoding="utf-8-sig"))]
    assert again == first and other != first and sorted(other) != sorted(first)
    page = (tmp_path / "run" / "review" / "review.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and "pwned" in page  # the hostile query cannot close the data element
    assert not any(marker in page for marker in ("http://", "https://", "src=", "@import"))  # no external resource


def test_page_for_800_rows_is_under_2_mb(tmp_path):
    config = load_config("builtin:demo/demo.yaml")
    # 500-character documents: longer than any QBQTC title or demo video text
    rows = [{"id": f"r1-d-{i:016x}-3-0", "query": f"红烧肉怎么做{i}", "doc": "标题：家常红烧肉的做法。" * 40}
            for i in range(800)]
    page = review.review_page(config, "0123456789ab", rows)
    assert len(page.encode("utf-8")) < 2_000_000


# --- verdict import: validation ------------------------------------------------------------------------------

def test_bad_verdict_line_stops_with_file_line_field_and_exit_2(tmp_path):
    records = make_run(tmp_path / "run")
    first = next(iter(records))
    verdicts = write_lines(tmp_path / "verdicts.jsonl", [{"id": first, "level": 1}, {"id": first, "level": 7}])
    result = relevel_cli("review", "import", verdicts, "--run", tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {verdicts}:2: field 'level': level 7 is outside the scale 0..3" in result.stderr.replace("\n", "")


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "nope", "level": 1}', "field 'id': unknown id 'nope': not a synthetic pair of this run"),
    ('{"id": "ID", "level": 1.5}', "field 'level': expected an integer level 0..3, got 1.5"),
    ('{"id": "ID", "level": "x"}', "field 'level': expected an integer level 0..3, got 'x'"),
    ('{"id": "ID"}', "field 'level': missing"),
    ('{"level": 1}', "field 'id': missing"),
    ('{"id": "ID", "level": ', "bad JSON"),
    ('{"id": "ID", "level": 2}', "field 'id': duplicate id 'ID' with another level: 1 on line 1, 2 here"),
])
def test_each_bad_verdict_kind_names_its_line_and_field(tmp_path, line, message):
    records = make_run(tmp_path / "run")
    first = next(iter(records))
    path = tmp_path / "verdicts.jsonl"
    path.write_text(f'{{"id": "{first}", "level": 1}}\n' + line.replace("ID", first) + "\n", encoding="utf-8")
    config = load_config(tmp_path / "run" / "config.yaml")
    with pytest.raises(InputError) as error:
        review.import_verdicts(config, tmp_path / "run", path)
    assert str(error.value).startswith(f"{path}:2: ") and message.replace("ID", first) in str(error.value)


def test_reject_mode_counts_every_bad_line_and_leaves_conflicts_out(tmp_path):
    records = make_run(tmp_path / "run")
    a, b, c = list(records)[:3]
    verdicts = write_lines(tmp_path / "verdicts.jsonl", [
        {"id": a, "level": records[a]["level"]},   # 1 good
        '{"id": ',                                   # 2 bad JSON
        {"id": "nope", "level": 1},                  # 3 unknown id
        {"id": b, "level": 9},                       # 4 outside the scale
        {"id": a, "level": records[a]["level"]},     # 5 the same verdict again: counted, not rejected
        {"id": c, "level": 0},                       # 6 first verdict for c
        "",                                          # 7 blank
        {"id": c, "level": 3},                       # 8 c again with another level: rejected, c left out
        {"id": b, "level": "2", "reviewer": "lin"},  # 9 good (an integer-like string)
    ])
    cli("review", "import", verdicts, "--run", tmp_path / "run", "--on-error", "reject")
    figures = json.loads((tmp_path / "run" / review.HUMAN_CHECK).read_text())
    assert (figures["reviewed"], figures["rejected"], figures["duplicates"], figures["conflicting_ids"]) == (2, 4, 1, 1)
    assert figures["rejected_by_reason"] == {"unreadable": 1, "unknown id": 1, "bad level": 1, "conflicting level": 1}
    rejects = [json.loads(line) for line in (tmp_path / "run" / "review" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(2, None), (3, "id"), (4, "level"), (8, "id")]
    gold = [json.loads(line) for line in (tmp_path / "run" / "review" / "gold.jsonl").read_text().splitlines()]
    assert {g["id"]: g["level"] for g in gold} == {a: records[a]["level"], b: 2}
    assert figures["reviewers"] == ["lin"]


def test_filled_in_spreadsheet_imports_and_skips_unlabelled_rows(tmp_path):
    make_run(tmp_path / "run")
    cli("review", "export", "--run", tmp_path / "run", "--per-level", 6)
    path = tmp_path / "run" / "review" / "review.csv"
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows[:4]:
        row["level"] = row["target_level"]
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cli("review", "import", path, "--run", tmp_path / "run")
    figures = json.loads((tmp_path / "run" / review.HUMAN_CHECK).read_text())
    assert (figures["reviewed"], figures["unlabelled"], figures["overall"]["precision"]) == (4, len(rows) - 4, 1.0)


# --- the whole loop in a real browser -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: the test set-up installs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_label_in_chromium_reload_download_import_and_report(tmp_path, chromium):
    run = tmp_path / "run"
    records = make_run(run)
    cli("review", "export", "--run", run, "--per-level", 6)
    sample_size = sum(min(6, sum(n for (level, _), n in STRATA.items() if level == lv)) for lv in range(4))
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((run / "review" / "review.html").as_uri())
    assert page.text_content("#done") == f"0 / {sample_size} labelled"
    assert "Exactly and fully meets the query intent." in page.text_content("#levels")  # the config's definitions
    assert page.title() == "relevel review"  # the hostile query's script did not run
    assert page.evaluate("q => data.pairs.some(p => p.query === q)", HOSTILE_QUERY)

    typed: dict[str, int] = {}
    for i in range(5):  # 3 at the target level, 2 one level off
        pair_id = page.text_content("#pair-id")
        target = records[pair_id]["level"]
        typed[pair_id] = target if i % 2 == 0 else (target + 1) % 4
        page.keyboard.press(str(typed[pair_id]))
    assert page.text_content("#done") == f"5 / {sample_size} labelled"
    assert page.text_content("#position") == f"pair 6 of {sample_size}"
    page.keyboard.press("9")  # not a level on a 4-level scale: nothing happens
    page.keyboard.press("2")
    assert page.text_content("#done") == f"6 / {sample_size} labelled"
    page.keyboard.press("u")  # undo the sixth pick: back on pair 6, unlabelled
    assert page.text_content("#done") == f"5 / {sample_size} labelled"
    assert page.text_content("#position") == f"pair 6 of {sample_size}" and page.locator(".picked").count() == 0
    page.keyboard.press("ArrowLeft")
    fifth = page.text_content("#pair-id")

    page.reload()
    assert page.text_content("#done") == f"5 / {sample_size} labelled"
    assert page.text_content("#pair-id") == fifth
    assert page.locator(".picked kbd").text_content() == str(typed[fifth])
    with page.expect_download() as download:
        page.click("#download")
    verdicts = tmp_path / "verdicts.jsonl"
    download.value.save_as(verdicts)
    assert errors == []
    context.close()
    lines = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert {v["id"]: v["level"] for v in lines} == typed and all(v["time"] for v in lines)

    result = cli("review", "import", verdicts, "--run", run)
    assert "Precision of the synthetic labels" in result.output
    figures = json.loads((run / review.HUMAN_CHECK).read_text())
    targets = [records[pair_id]["level"] for pair_id in typed]
    for level in range(4):
        at_level = [pair_id for pair_id in typed if records[pair_id]["level"] == level]
        agree = sum(typed[pair_id] == level for pair_id in at_level)
        row = figures["precision"][level]
        assert (row["reviewed"], row["agree"]) == (len(at_level), agree)
        assert row["precision"] == (agree / len(at_level) if at_level else None)
    assert figures["overall"]["agree"] == 3 and figures["overall"]["precision"] == 0.6
    assert (figures["overall"]["low"], figures["overall"]["high"]) == pytest.approx((0.2307, 0.8824), abs=1e-4)
    expected_kappa = cohen_kappa_score(targets, list(typed.values()), labels=[0, 1, 2, 3], weights="linear")
    assert figures["weighted_kappa"] == pytest.approx(expected_kappa) and not math.isnan(expected_kappa)
    assert sum(map(sum, figures["confusion"])) == 5

    report = (run / "report.md").read_text()
    assert report.count("## Human check") == 1 and "![human check](plots/human-check.png)" in report
    assert (run / review.HUMAN_CHECK_PLOT).stat().st_size > 0
    gold_config = load_config(run / "review" / "gold-config.yaml")
    reader = RecordReader(gold_config.data.spec(), gold_config.scale, "pairs", scope="gold")
    gold = list(reader.read(run / "review" / "gold.jsonl"))
    assert {g.id.removeprefix("gold:"): g.level for g in gold} == typed
    assert all(g.doc == records[g.id.removeprefix("gold:")]["doc"] for g in gold)

    # a second import replaces the section; a later run's report keeps it
    cli("review", "import", verdicts, "--run", run)
    assert (run / "report.md").read_text().count("## Human check") == 1
    write_run_report(load_config(run / "config.yaml"), run, [], 0)
    assert "## Human check" in (run / "report.md").read_text()


def test_review_commands_need_a_run_with_synthetic_data(tmp_path):
    make_run(tmp_path / "run")
    (tmp_path / "run" / "synthetic.jsonl").unlink()
    result = CliRunner().invoke(app, ["review", "export", "--run", str(tmp_path / "run")])
    assert "no synthetic.jsonl" in str(result.exception)
    shutil.rmtree(tmp_path / "run")
    result = CliRunner().invoke(app, ["review", "export", "--run", str(tmp_path / "run")])
    assert "not a run directory" in str(result.exception)
