"""Graded metrics against hand computation, the bootstrap, and the graded InfoNCE loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relevel.eval.bootstrap import paired_bootstrap
from relevel.eval.retrieval import GradedPairs, graded_metrics, pair_metrics, retrieval_corpus, retrieval_metrics


def test_ndcg_and_recall_match_hand_computation():
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}}
    run = {"q1": {"b": 0.9, "x": 0.8, "a": 0.7}, "q2": {"y": 0.5, "z": 0.4}}
    metrics = retrieval_metrics(run, qrels)
    # trec_eval's NDCG: gain = level, discount log2(rank + 1); q1 ranks b (1), x (0), a (2); q2 finds nothing
    q1 = (1 / math.log2(2) + 2 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert metrics["ndcg@10"] == pytest.approx(q1 / 2)
    assert metrics["recall@10"] == pytest.approx((1.0 + 0.0) / 2)
    assert metrics["ndcg@5"] == metrics["ndcg@10"]


def test_pair_metrics_match_hand_computation():
    scores = np.array([0.9, 0.8, 0.3, 0.2])
    levels = np.array([2, 0, 1, 0])
    metrics = pair_metrics(scores, levels, thresholds=(1, 2))
    # level ≥ 1: positives at ranks 1 and 3 → AP = (1/1 + 2/3) / 2
    assert metrics["ap@level>=1"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["ap@level>=2"] == pytest.approx(1.0)
    # Spearman = Pearson of the ranks (ties share the mean rank)
    expected = np.corrcoef([4, 3, 2, 1], [4, 1.5, 3, 1.5])[0, 1]
    assert metrics["spearman"] == pytest.approx(expected)


def test_full_corpus_and_rerank_protocols():
    pairs = GradedPairs(["q1", "q1", "q2"], ["a", "b", "c"], np.array([2, 0, 1]))
    # corpus order: a, b, c; q1 prefers b over a (wrong), q2 finds c first
    corpus = np.array([[0.5, 0.9, 0.1], [0.0, 0.2, 0.8]])
    metrics = graded_metrics(pairs, np.array([0.5, 0.9, 0.8]), corpus, thresholds=(1, 2))
    assert metrics["rerank_ndcg@10"] == pytest.approx(
        np.mean([(2 / math.log2(3)) / 2, 1.0]))
    assert metrics["ndcg@10"] == pytest.approx(metrics["rerank_ndcg@10"])  # c is q2's top in both
    assert metrics["recall@10"] == 1.0


def test_distractors_join_the_retrieval_corpus_as_irrelevant_documents():
    pairs = GradedPairs(["q1", "q1", "q2"], ["a", "b", "c"], np.array([2, 0, 1]))
    corpus = retrieval_corpus(pairs, ["x", "A ", "c", "x"])  # "A " is "a" once normalised; "c" is dev's own
    assert corpus == ["a", "b", "c", "x"]
    # q1 ranks a first as before, q2 now ranks the distractor x above c
    scores = np.array([[0.9, 0.5, 0.1, 0.2], [0.0, 0.2, 0.7, 0.8]])
    metrics = graded_metrics(pairs, np.array([0.9, 0.5, 0.7]), scores, thresholds=(1, 2), corpus=corpus)
    assert metrics["ndcg@10"] == pytest.approx(np.mean([1.0, 1 / math.log2(3)]))
    assert metrics["rerank_ndcg@10"] == 1.0  # each query's own candidates: distractors play no part
    without = graded_metrics(pairs, np.array([0.9, 0.5, 0.7]), scores[:, :3], thresholds=(1, 2))
    assert without["ndcg@10"] == 1.0 and without["spearman"] == metrics["spearman"]


def test_paired_bootstrap_sees_a_real_gain_and_no_gain_for_a_copy():
    rng = np.random.default_rng(0)
    queries = [f"q{i // 3}" for i in range(300)]
    levels = rng.integers(0, 3, 300)
    weak = levels + rng.normal(0, 2.0, 300)
    strong = levels + rng.normal(0, 0.5, 300)
    ndcg_weak = {f"q{i}": 0.5 for i in range(100)}
    ndcg_strong = {f"q{i}": 0.6 for i in range(100)}
    gap = paired_bootstrap(queries, levels, [weak], [strong], ndcg_weak, ndcg_strong, resamples=200)
    assert gap["spearman"]["low"] > 0 and gap["ndcg@10"]["difference"] == pytest.approx(0.1)
    same = paired_bootstrap(queries, levels, [weak], [weak], ndcg_weak, ndcg_weak, resamples=50)
    assert same["spearman"] == {"difference": 0.0, "low": 0.0, "high": 0.0}


def test_graded_infonce_is_infonce_when_every_weight_is_one_and_ignores_zero_weights(offline_base):
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from relevel.models.embedder import build_embedder
    from relevel.models.embedder.config import EmbedderConfig
    from relevel.models.embedder.losses import GradedInfoNCELoss

    model = build_embedder(EmbedderConfig(base_model=offline_base))
    texts = [["红烧肉做法", "手机壳", "北京天气"], ["红烧肉的家常做法视频", "苹果手机壳推荐", "北京今日天气预报"]]
    features = [model.tokenize(t) for t in texts]
    with torch.no_grad():
        graded = GradedInfoNCELoss(model)(features, torch.ones(3))
        reference = MultipleNegativesRankingLoss(model)(features, None)
        assert float(graded) == pytest.approx(float(reference), rel=1e-5)
        only_first = GradedInfoNCELoss(model)(features, torch.tensor([1.0, 0.0, 0.0]))
        scores = torch.nn.functional.cosine_similarity(
            model(features[0])["sentence_embedding"][:1], model(features[1])["sentence_embedding"]) * 20
        assert float(only_first) == pytest.approx(float(-torch.log_softmax(scores, 0)[0]), rel=1e-4)


def test_stored_lower_layers_embed_as_the_full_model_and_train_only_its_top_layers(offline_base, tmp_path):
    import torch

    from relevel.models.embedder import build_embedder
    from relevel.models.embedder.config import EmbedderConfig
    from relevel.models.embedder.losses import GradedInfoNCELoss
    from relevel.models.embedder.stored_layers import stored_layers_model
    from relevel.models.encoder import FrozenEncoder

    model = build_embedder(EmbedderConfig(base_model=offline_base)).eval()
    queries, docs = ["红烧肉做法", "手机壳", "北京天气"], ["红烧肉的家常做法视频", "苹果手机壳推荐", "北京今日天气预报"]
    lower = FrozenEncoder(offline_base, 64, num_layers=8, store=tmp_path, special_tokens=True)
    lower.encode(["query: " + q for q in queries] + ["passage: " + d for d in docs], "document")
    stand_in = stored_layers_model(model, lower, trainable=4).eval()
    with torch.no_grad():
        for texts, prompt in ((queries, "query"), (docs, "document")):
            full = model.encode(texts, prompt_name=prompt, convert_to_tensor=True)
            stored = stand_in.encode(texts, prompt_name=prompt, convert_to_tensor=True)
            assert torch.allclose(full, stored, atol=1e-3), prompt  # the store keeps float16 states

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    features = [stand_in.preprocess(queries, prompt="query: "), stand_in.preprocess(docs, prompt="passage: ")]
    GradedInfoNCELoss(stand_in.train())(features, torch.ones(3)).backward()
    torch.optim.SGD(stand_in.parameters(), lr=0.1).step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(any(f"encoder.layer.{i}." in name for i in range(8, 12)) for name in changed)
    assert {n.split("encoder.layer.")[1].split(".")[0] for n in changed} == {"8", "9", "10", "11"}


def test_base_share_mixes_the_base_weights_back_into_the_trained_ones(offline_base, tmp_path):
    from relevel.data.scale import Level, LevelScale
    from relevel.data.schema import LabeledPair
    from relevel.models.embedder import build_embedder, load_embedder, train_embedder
    from relevel.models.embedder.config import EmbedderConfig

    scale = LevelScale(levels=[Level(value=v, name=n) for v, n in enumerate(["poor", "partial", "high"])])
    texts = [("红烧肉做法", "红烧肉的家常做法视频", 2), ("手机壳", "苹果手机壳推荐", 1),  # no text twice: batches
             ("上海天气", "红烧肉的做法", 0), ("北京天气", "北京今日天气预报", 2)]      # hold no duplicates
    pairs = [LabeledPair(id=f"t{i}", query=q, doc_id=f"d{i}", doc=d, level=lv, source="real")
             for i, (q, d, lv) in enumerate(texts)]
    config = EmbedderConfig(base_model=offline_base, loss="cosent", steps=2, batch_size=4, learning_rate=1e-3,
                            trainable_layers=2, matryoshka_dims=None)
    weights = {}
    for share in (0.0, 0.25):
        train_embedder(config.model_copy(update={"base_share": share}), scale, pairs, [], tmp_path / f"m{share}",
                       tmp_path, tmp_path / "store")
        weights[share] = load_embedder(tmp_path / f"m{share}").state_dict()
    base = build_embedder(config).state_dict()
    top = [name for name in base if "encoder.layer.11." in name and name.endswith("weight")]
    assert top and all(not weights[0.0][name].equal(base[name]) for name in top)  # training moved them
    for name in base:
        expected = 0.75 * weights[0.0][name] + 0.25 * base[name]
        assert weights[0.25][name].allclose(expected, atol=1e-6), name  # lower layers: all three are equal


def test_demo_experiment_saves_embedders_that_embed_eval_reads(demo_dir, tmp_path):
    import json

    from sentence_transformers import SentenceTransformer

    from conftest import REPO, relevel_cli

    run_dir = demo_dir / "relevel-demo"
    model_dir = run_dir / "embed-ssra-s0" / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    trained = json.loads((run_dir / "embed-ssra-s0" / "manifest.json").read_text())
    assert trained["counts"]["synthetic"] > 0 and trained["metrics"]["fit"]["steps"] == 40
    real = json.loads((run_dir / "embed-real-s0" / "manifest.json").read_text())
    assert real["counts"]["synthetic"] == 0 and real["metrics"]["fit"]["steps"] == 40  # same optimiser steps
    # CoSENT batches never mix labellers: the judge-kept pairs are a dataset of their own
    examples = trained["metrics"]["fit"]["examples"]
    assert examples["cosent-judged"] == trained["counts"]["synthetic"]
    assert examples["cosent"] == trained["counts"]["pairs"] - trained["counts"]["synthetic"]
    assert "cosent-judged" not in real["metrics"]["fit"]["examples"]

    result = relevel_cli("embed", "eval", "--config", "builtin:demo/demo.yaml", "--model", model_dir, "--data",
                         REPO / "src" / "relevel" / "demo" / "dev.jsonl", "--out", tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    in_run = json.loads((run_dir / "eval-ssra-s0" / "manifest.json").read_text())["metrics"]
    assert metrics.keys() == in_run.keys() and metrics["spearman"] == pytest.approx(in_run["spearman"], abs=1e-4)
    assert 0 < metrics["ndcg@10"] <= 1 and "ap@level>=3@dim64" in metrics
    # the unlabelled documents as distractors: a larger corpus can only push relevant documents down, and
    # leaves every pair-level metric as it was
    unlabeled = REPO / "src" / "relevel" / "demo" / "unlabeled.jsonl"
    harder = relevel_cli("embed", "eval", "--config", "builtin:demo/demo.yaml", "--model", model_dir, "--data",
                         REPO / "src" / "relevel" / "demo" / "dev.jsonl", "--distractors", unlabeled,
                         "--out", tmp_path / "eval-distractors")
    assert harder.returncode == 0, harder.stderr
    with_distractors = json.loads((tmp_path / "eval-distractors" / "metrics.json").read_text())
    corpus = json.loads((tmp_path / "eval-distractors" / "eval" / "manifest.json").read_text())["counts"]["corpus"]
    dev_docs = json.loads((tmp_path / "eval" / "eval" / "manifest.json").read_text())["counts"]["corpus"]
    assert dev_docs < corpus <= dev_docs + 300
    assert f"retrieval corpus: {corpus} documents" in " ".join(harder.stdout.split())  # as rich wraps it
    assert with_distractors["ndcg@10"] <= metrics["ndcg@10"] and with_distractors["recall@10"] <= metrics["recall@10"]
    assert all(with_distractors[k] == pytest.approx(metrics[k]) for k in metrics
               if k.startswith(("spearman", "ap@", "rerank_")))

    report = (run_dir / "report.md").read_text()
    assert "## Embedder experiment" in report and "paired per-query bootstrap" in report
    plots = ("metrics.png", "levels.png", "control.png")
    assert all((run_dir / "plots" / name).stat().st_size > 1000 for name in plots)
    page = (run_dir / "report.html").read_text()  # the same report, self-contained
    assert "<table>" in page and page.count('src="data:image/png;base64,') == report.count("](plots/")
    missing = relevel_cli("embed", "eval", "--config", "builtin:demo/demo.yaml", "--model", tmp_path, "--data",
                          REPO / "src" / "relevel" / "demo" / "dev.jsonl", "--out", tmp_path / "x")
    assert missing.returncode == 2 and "not a sentence-transformers model folder" in missing.stderr


def test_configured_distractors_reach_every_evaluation_of_the_experiment(tiny_run, tiny_base, tmp_path):
    import json
    import shutil

    from conftest import DEMO, relevel_cli, write_lines, write_tiny_run_config

    # unlabelled documents the tiny run did not use (it reads the first 12)
    extra = (DEMO / "unlabeled.jsonl").read_text(encoding="utf-8").splitlines()[12:40]
    distractors = write_lines(tmp_path / "distractors.jsonl", extra)
    config = write_tiny_run_config(tmp_path, tiny_base)
    config.write_text(config.read_text().replace("unlabeled: ", f"distractors: {distractors}, unlabeled: "))
    run_dir = shutil.copytree(tiny_run.run_dir, tmp_path / "run")
    result = relevel_cli("run", "--config", config, "--out", run_dir)
    assert result.returncode == 0, result.stderr
    redone = {line.split()[1].rstrip(":") for line in result.stdout.splitlines() if ": done in" in line}
    assert redone == {"ingest-distractors", "stats", "eval-zero-shot", "eval-bm25", "eval-real-s0", "eval-ssra-s0"}
    for step in ("eval-zero-shot", "eval-bm25", "eval-real-s0", "eval-ssra-s0"):
        before, after = (json.loads((folder / step / "manifest.json").read_text())
                         for folder in (tiny_run.run_dir, run_dir))
        assert after["counts"]["corpus"] == before["counts"]["corpus"] + 28, step
        assert after["metrics"]["ndcg@10"] <= before["metrics"]["ndcg@10"], step
        if step != "eval-bm25":  # BM25 scores every pair with the corpus's term statistics, distractors included
            assert after["metrics"]["spearman"] == before["metrics"]["spearman"], step
    assert "plus the distractors of `data.distractors`" in (run_dir / "report.md").read_text()
