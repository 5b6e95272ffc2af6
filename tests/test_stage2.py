"""Stage 2: the level plan, the filter's invariants on the demo run (real models), and a SIGKILL during
round 2 that resumes without losing or duplicating a record."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from importlib import resources

import pytest

from conftest import relevel_cli, sigkill_when_file_appears
from relevel.config import SynthesisConfig
from relevel.data.schema import normalize_text
from relevel.pipeline.filter import near_duplicate_key, order_conflicts
from relevel.pipeline.io import read_records
from relevel.pipeline.synthesize import allocate, plan_levels


def test_balance_plan_requests_what_each_level_lacks(scale4):
    plan = plan_levels(scale4, SynthesisConfig(), Counter({0: 100, 1: 10, 2: 40, 3: 100}), {})
    assert plan.needed == (0, 90, 60, 0)
    assert plan.shares == pytest.approx((0, 0.6, 0.4, 0))
    # a level that yielded little last round gets proportionally more requests
    low_yield = plan_levels(scale4, SynthesisConfig(), Counter({0: 100, 1: 10, 2: 40, 3: 100}), {1: 0.1, 2: 0.4})
    assert low_yield.shares[1] / low_yield.shares[2] == pytest.approx((90 / 0.1) / (60 / 0.4))
    assert plan_levels(scale4, SynthesisConfig(), Counter({0: 5, 1: 5, 2: 5, 3: 5}), {}).done


def test_explicit_and_only_plans(scale4):
    shares = SynthesisConfig(target_distribution={"irrelevant": 0.5, "perfect": 0.5})
    plan = plan_levels(scale4, shares, Counter({0: 30, 1: 10, 2: 10, 3: 10}), {})
    assert plan.needed == (0, 0, 0, 20) and plan.shares == (0, 0, 0, 1)
    only = plan_levels(scale4, SynthesisConfig(only=["related", "mostly"]), Counter({0: 1}), {})
    assert only.shares == (0, 0.5, 0.5, 0) and only.needed == (None,) * 4
    assert allocate((0.5, 0.25, 0.25), 7) == [3, 2, 2] and sum(allocate((0.2, 0.3, 0.5), 101)) == 101


def test_unknown_level_names_in_the_synthesis_config_are_errors(tmp_path):
    from relevel.config import load_config
    from relevel.errors import ConfigError

    config = tmp_path / "c.yaml"
    config.write_text("name: t\nscale: {levels: [{value: 0, name: bad}, {value: 1, name: good}]}\n"
                      "data: {train: x.jsonl, document: {template: '{title}'}}\nsynthesis: {only: [great]}\n",
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown level name.*great"):
        load_config(config)


def test_near_duplicates_and_order_conflicts():
    assert near_duplicate_key("Red  Braised, Pork!") == near_duplicate_key("red braised pork") == "redbraisedpork"
    kept = [{"id": "a", "doc_id": "d", "level": 1, "expected_level": 2.2, "probability": 0.6},
            {"id": "b", "doc_id": "d", "level": 3, "expected_level": 2.0, "probability": 0.9},
            {"id": "c", "doc_id": "d", "level": 0, "expected_level": 0.3, "probability": 0.8},
            {"id": "e", "doc_id": "other", "level": 0, "expected_level": 2.5, "probability": 0.5}]
    assert order_conflicts(kept) == {"a"}  # a (level 1) is judged above b (level 3); a is less sure


def test_demo_filter_invariants(demo_dir):
    run_dir = demo_dir / "relevel-demo"
    real_queries = {near_duplicate_key(r["query"]) for r in read_records(run_dir / "holdout" / "train")}
    seen_keys = set()
    for round_index in (1, 2):
        candidates = list(read_records(run_dir / f"synthesize-r{round_index}" / "candidates"))
        judged = {p["id"]: p for p in read_records(run_dir / f"judge-r{round_index}" / "predictions")}
        kept = [r for r in read_records(run_dir / f"filter-r{round_index}" / "kept") if r["round"] == round_index]
        dropped = list(read_records(run_dir / f"filter-r{round_index}" / "dropped"))
        assert candidates and len(kept) + len(dropped) == len(candidates)
        assert sorted(r["id"] for r in [*kept, *dropped]) == sorted(c["id"] for c in candidates)
        manifest = json.loads((run_dir / f"filter-r{round_index}" / "manifest.json").read_text())
        assert sum(manifest["metrics"]["dropped_by_reason"].values()) == len(dropped)
        all_kept = list(read_records(run_dir / f"filter-r{round_index}" / "kept"))  # every round so far
        assert manifest["counts"] == {"kept": len(all_kept), "kept_this_round": len(kept), "dropped": len(dropped)}
        for record in kept:
            assert judged[record["id"]]["level"] == record["level"]
            assert record["probability"] >= 0.5 and record["generator"].endswith("/model")
            key = (record["doc_id"], near_duplicate_key(record["query"]))
            assert key not in seen_keys and key[1] not in real_queries
            seen_keys.add(key)
    synthetic = [json.loads(line) for line in (run_dir / "synthetic.jsonl").read_text().splitlines()]
    assert len(synthetic) == len(seen_keys) and {r["round"] for r in synthetic} <= {1, 2}
    dev_docs = {normalize_text(r["doc"]) for r in read_records(run_dir / "ingest-dev" / "records")}
    assert not any(normalize_text(r["doc"]) in dev_docs for r in synthetic)


@pytest.mark.slow  # ~5 min; in CI, tests/test_interrupted_runs.py kills every step of a tiny run, rounds included
def test_sigkill_in_round_two_resumes_without_losing_or_duplicating(demo_dir, tmp_path):
    """Kill while round 2 generates with the real demo models; resume; the candidates equal those of a run
    that was never killed."""
    config = tmp_path / "demo.yaml"  # the demo's config with small chunks (chunking is not part of a cache key)
    config.write_text(resources.files("relevel").joinpath("demo/demo.yaml").read_text(encoding="utf-8")
                      .replace("chunk_size: 200", "chunk_size: 20"), encoding="utf-8")
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    for run_dir in (killed, reference):
        shutil.copytree(demo_dir / "relevel-demo", run_dir)
        for step in ("synthesize-r2", "judge-r2", "filter-r2", "generator-r2", "control-r2"):
            shutil.rmtree(run_dir / step)

    marker = killed / "synthesize-r2" / "candidates" / "chunk-00001.jsonl"
    sigkill_when_file_appears(marker, "stage2", "--config", config, "--out", killed)
    assert marker.exists(), "round 2 never started generating"
    resumed = relevel_cli("stage2", "--config", config, "--out", killed)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((killed / "synthesize-r2" / "manifest.json").read_text())
    assert manifest["metrics"]["items_resumed"] >= 40

    uninterrupted = relevel_cli("run", "--config", config, "--out", reference, "--until", "synthesize-r2")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    candidates = list(read_records(killed / "synthesize-r2" / "candidates"))
    assert candidates == list(read_records(reference / "synthesize-r2" / "candidates"))
    assert len({c["id"] for c in candidates}) == len(candidates)
    kept = [k for k in read_records(killed / "filter-r2" / "kept") if k["round"] == 2]
    assert len(kept) + len(list(read_records(killed / "filter-r2" / "dropped"))) == len(candidates)
