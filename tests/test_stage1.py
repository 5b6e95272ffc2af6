"""Stage 1: linking, the D2Q invariants, the generator's level control, and the generation metrics."""

import json

import pytest
from scipy.stats import mannwhitneyu

from relevel.config import LinkingConfig
from relevel.data.scale import Level, LevelScale
from relevel.data.schema import LabeledPair, normalize_text, text_id
from relevel.data.splits import cap_levels, split_by_document
from relevel.eval.generation import REPEATED_SPAN, control_accuracy, distinct_n, diversity
from relevel.pipeline.annotate import LinkCandidates
from relevel.pipeline.io import read_records
from relevel.pipeline.step import StepContext


def labelled(query: str, doc: str, level: int, i: int) -> dict:
    return LabeledPair(id=f"train:{i}", query=query, doc_id=text_id(doc), doc=doc, level=level).model_dump()


@pytest.fixture
def link_run(tmp_path):
    """A tiny training split on disk, the way the holdout step leaves it."""
    topics = ["红烧肉", "吉他", "口红", "手机", "猫粮", "跑步"]
    rows = [labelled(f"{t}教程{k}", f"{t}的做法和技巧第{k}集", k % 3, i)
            for i, (t, k) in enumerate((t, k) for t in topics for k in range(4))]
    rows.append(labelled("红烧肉教程0", "红烧肉的做法和技巧第0集", 2, 99))  # a duplicate human pair
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "chunk-00000.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return tmp_path, rows


def run_linking(tmp_path, config: LinkingConfig):
    step_dir = tmp_path / "link"
    result = LinkCandidates(name="link", bind={"train": "holdout/train"}, config=config).run(
        StepContext(step_dir, {"train": tmp_path / "train"}, chunk_size=7, progress=False))
    return list(read_records(step_dir / "links")), result.metrics


def test_linking_spans_depths_never_relinks_a_human_pair_and_caps_hot_queries(link_run):
    tmp_path, rows = link_run
    config = LinkingConfig(top=2, middle=2, middle_depth=10, random=1, max_links_per_query=8)
    links, metrics = run_linking(tmp_path, config)
    human = {(normalize_text(r["query"]), r["doc_id"]) for r in rows}
    docs = {r["doc_id"] for r in rows}
    assert {link["doc_id"] for link in links} == docs
    assert not {(normalize_text(link["query"]), link["doc_id"]) for link in links} & human
    pairs = [(link["query"], link["doc_id"]) for link in links]
    assert len(pairs) == len(set(pairs))  # no duplicate (query, document) link
    assert {link["origin"] for link in links} == {"top", "middle", "random"}
    per_query = {}
    for link in links:
        per_query[link["query"]] = per_query.get(link["query"], 0) + 1
    assert max(per_query.values()) <= 8
    for link in links:  # a top link comes from BM25's head, a middle one from deeper, a random one from none
        assert (link["bm25_rank"] is None) == (link["origin"] == "random")
        assert link["origin"] != "middle" or link["bm25_rank"] < 10
    assert sum(metrics["links_by_origin"].values()) == len(links) and metrics["documents"] == len(docs)
    # the same topic's queries rank first: a document's top links share its topic
    tops = [link for link in links if link["origin"] == "top"]
    assert sum(link["query"][:2] == link["doc"][:2] for link in tops) / len(tops) > 0.8


def test_cap_levels_and_document_split():
    pairs = [LabeledPair(id=str(i), query=f"q{i}", doc_id=f"d{i % 7}", doc=f"doc {i % 7}", level=0 if i < 90 else 1)
             for i in range(100)]
    capped = cap_levels(pairs, ratio=2.0, seed=0)
    assert sum(p.level == 0 for p in capped) == 20 and sum(p.level == 1 for p in capped) == 10
    assert [p.id for p in capped] == sorted((p.id for p in capped), key=int)  # order kept
    fit, tune = split_by_document(pairs, 0.3, seed=0)
    assert not {p.doc_id for p in fit} & {p.doc_id for p in tune} and len(fit) + len(tune) == 100


def test_generation_metrics_against_hand_counts():
    assert distinct_n(["abab"], 2) == round(2 / 3, 4)  # ab, ba, ab
    assert distinct_n(["ab", "ab"], 1) == 0.5
    d = diversity(["红烧肉", "吉他教学", "新问题"], ["红烧肉的做法", "古典吉他", "别的"], {"吉他教学"})
    assert d["substring_of_document"] == round(1 / 3, 4) and d["identical_to_training_query"] == round(1 / 3, 4)
    assert d["repeated_span"] == 0
    looped = diversity(["全国全国相声", "哈哈哈", "天天特价"], ["", "", ""], set())
    assert looped["repeated_span"] == round(1 / 3, 4)  # a repeated single character ("天天", "哈哈哈") is not a loop
    scale = LevelScale(levels=tuple(Level(value=v, name=n) for v, n in enumerate(["a", "b", "c"])))
    assert control_accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], scale) == {"a": 0.5, "b": 1.0, "c": 0.0}


def test_demo_d2q_invariants(demo_dir):
    run_dir = demo_dir / "relevel-demo"
    pairs = list(read_records(run_dir / "d2q" / "pairs"))
    human = {(normalize_text(r["query"]), r["doc_id"]): r["level"] for r in read_records(run_dir / "holdout" / "train")}
    keys = [(normalize_text(p["query"]), p["doc_id"]) for p in pairs]
    assert len(keys) == len(set(keys))  # no duplicate (query, document)
    assert all(p["source"] in ("real", "reannotated") and 0 <= p["level"] <= 3 for p in pairs)
    for p, key in zip(pairs, keys):  # every human pair is there with its human label
        if key in human:
            assert p["source"] == "real" and p["level"] == human[key]
    assert {key for key, p in zip(keys, pairs) if p["source"] == "real"} == set(human)
    predictions = {r["id"]: r for r in read_records(run_dir / "reannotate" / "predictions")}
    for p in pairs:
        if p["source"] == "reannotated":  # a kept link carries the judge's level, at the required confidence
            assert predictions[p["id"]]["level"] == p["level"] and predictions[p["id"]]["probs"][p["level"]] >= 0.6
    documents = list(read_records(run_dir / "d2q" / "documents"))
    assert sum(len(qs) for d in documents for qs in d["queries"].values()) == len(pairs)
    metrics = json.loads((run_dir / "d2q" / "manifest.json").read_text())["metrics"]
    assert metrics["after"]["queries_per_document"] > metrics["before"]["queries_per_document"]
    assert metrics["after"]["documents_with_2_or_more_levels"] > metrics["before"]["documents_with_2_or_more_levels"]


def test_demo_generator_conditions_on_the_level(demo_dir):
    """Queries written for level 0 and for the top level of the same documents are judged differently."""
    generated = list(read_records(demo_dir / "relevel-demo" / "control" / "generated"))
    by_target = {t: [g["judged"] for g in generated if g["target"] == t] for t in (0, 3)}
    assert min(len(v) for v in by_target.values()) >= 50
    mean = {t: sum(v) / len(v) for t, v in by_target.items()}
    # the requirement: the judged distributions differ, in the right direction (one-sided
    # Mann-Whitney). The held-out judge saw ~150 demo pairs and the shift is small (issue 6's note).
    assert mean[3] > mean[0], mean
    assert mannwhitneyu(by_target[3], by_target[0], alternative="greater").pvalue < 0.05


def test_repetition_penalty_reaches_decoding(demo_dir):
    """A prohibitive penalty lets no piece appear twice in a query, so none says a span twice in a row."""
    from relevel.models.generator import load_generator

    run = demo_dir / "relevel-demo"
    generator = load_generator(run / "generator" / "model", run / "cache" / "encodings")
    docs = list(dict.fromkeys(r["doc"] for r in read_records(run / "control" / "generated")))[:30]
    requests = [(doc, level) for level in range(4) for doc in docs]

    def queries(penalty: float) -> list[str]:
        generator.config = generator.config.model_copy(update={"repetition_penalty": penalty})
        written = generator.generate([d for d, _ in requests], [lvl for _, lvl in requests], n=2, seed=0)
        return [q for per_request in written for q in per_request]

    forbidding = queries(1e6)
    assert len(forbidding) >= len(requests) and not [q for q in forbidding if REPEATED_SPAN.search(q)]
    assert queries(1.0) != forbidding  # same seed: only the penalty differs
