"""Stage 1 data: link every document to more real queries, let the judge label the links (`JudgePairs`),
and merge the confident links with the human pairs into doc → queries-per-level (D2Q) data."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from tqdm.auto import tqdm

from relevel.config import AnnotationConfig, LinkingConfig
from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair, normalize_text
from relevel.data.stats import pair_stats
from relevel.models.bm25 import BM25Index
from relevel.pipeline.io import ChunkedOutputs, batched, read_records
from relevel.pipeline.step import Step, StepContext, StepResult, Work

SEARCH_BATCH = 512  # documents per BM25 call: bounds the (documents × depth) result arrays


def unique_human_pairs(records: Iterable[dict]) -> list[LabeledPair]:
    """One pair per (normalised query, document); the first label wins (ingest counted the conflicts)."""
    seen: set[tuple[str, str]] = set()
    pairs = []
    for record in records:
        pair = LabeledPair(**record)
        key = (normalize_text(pair.query), pair.doc_id)
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    return pairs


@dataclass(kw_only=True)
class LinkCandidates(Step):
    """For each document, real queries from the training pool at several BM25 depths, plus random ones,
    so the links span the levels instead of being near-duplicates of the document's own query."""

    inputs: ClassVar[tuple[str, ...]] = ("train",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("unlabeled",)
    outputs: ClassVar[tuple[str, ...]] = ("links",)
    SECONDS_PER_ITEM: ClassVar[float] = 0.0013  # per document

    config: LinkingConfig

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if "train" not in sizes:
            return None
        # at most one document per training pair; the per-query cap and labelled pairs lower the links a little
        documents = sum(sizes.get(split, 0) for split in self.config.documents)
        per_document = self.config.top + self.config.middle + self.config.random
        return Work(documents, {"links": documents * per_document})

    def run(self, ctx: StepContext) -> StepResult:
        config = self.config
        human = unique_human_pairs(read_records(ctx.inputs["train"]))
        queries = list({normalize_text(p.query): p.query for p in human}.values())
        query_index = {normalize_text(q): i for i, q in enumerate(queries)}
        labelled: dict[str, set[int]] = defaultdict(set)
        for pair in human:
            labelled[pair.doc_id].add(query_index[normalize_text(pair.query)])
        documents = self._documents(ctx, human)

        index = BM25Index(queries)
        rng = np.random.default_rng(config.seed)
        uses: Counter = Counter()
        links: list[dict] = []
        depth = max(config.top, config.middle_depth if config.middle else 0)
        with tqdm(total=len(documents), desc="linking", unit="doc", disable=not ctx.progress, leave=False) as bar:
            for batch in batched(list(documents.items()), SEARCH_BATCH):
                ranked, _ = index.search([text for _, text in batch], depth + 1) if depth else (None, None)
                for row, (doc_id, text) in enumerate(batch):
                    taken = set(labelled.get(doc_id, ()))  # never re-link a pair a human labelled
                    chosen = self._pick(ranked[row] if depth else [], taken, uses, rng, len(queries))
                    links += [{"id": f"link:{len(links) + n}", "query": queries[q], "doc_id": doc_id, "doc": text,
                               "origin": origin, "bm25_rank": rank} for n, (q, origin, rank) in enumerate(chosen)]
                bar.update(len(batch))

        outputs = ChunkedOutputs(ctx.step_dir, self.outputs)
        outputs.write_all({"links": links}, ctx.chunk_size)
        origins = Counter(link["origin"] for link in links)
        return StepResult(outputs.counts(), {
            "documents": len(documents), "query_pool": len(queries), "links_by_origin": dict(origins),
            "distinct_queries_linked": len(uses), "queries_at_cap": sum(c >= config.max_links_per_query
                                                                         for c in uses.values())})

    def _documents(self, ctx: StepContext, human: list[LabeledPair]) -> dict[str, str]:
        documents: dict[str, str] = {}
        if "train" in self.config.documents:
            documents.update((p.doc_id, p.doc) for p in human)
        if "unlabeled" in self.config.documents and "unlabeled" in ctx.inputs:
            documents.update((r["id"], r["text"]) for r in read_records(ctx.inputs["unlabeled"]))
        return documents

    def _pick(self, ranked: Iterable[int], taken: set[int], uses: Counter, rng: np.random.Generator,
              pool: int) -> list[tuple[int, str, int | None]]:
        config = self.config

        def usable(q: int) -> bool:
            return q not in taken and uses[q] < config.max_links_per_query

        chosen: list[tuple[int, str, int | None]] = []

        def take(q: int, origin: str, rank: int | None) -> None:
            chosen.append((q, origin, rank))
            taken.add(q)
            uses[q] += 1

        ranked = [int(q) for q in ranked]
        top = [(rank, q) for rank, q in enumerate(ranked) if usable(q)][:config.top]
        for rank, q in top:
            take(q, "top", rank)
        deeper = [(rank, q) for rank, q in enumerate(ranked[:config.middle_depth]) if usable(q)]
        for i in sorted(rng.choice(len(deeper), size=min(config.middle, len(deeper)), replace=False)):
            take(deeper[i][1], "middle", deeper[i][0])
        for _ in range(config.random):
            for q in rng.integers(0, pool, size=8):  # a few tries: the pool is large, collisions are rare
                if usable(int(q)):
                    take(int(q), "random", None)
                    break
        return chosen


def d2q_summary(pairs: list[LabeledPair], scale: LevelScale) -> dict[str, Any]:
    """What stage 1 is for: more queries per document, at more levels, with fewer repeated queries."""
    per_doc: dict[str, set[int]] = defaultdict(set)
    queries_per_doc: Counter = Counter()
    for pair in pairs:
        per_doc[pair.doc_id].add(pair.level)
        queries_per_doc[pair.doc_id] += 1
    stats = pair_stats(pairs, scale)
    return {
        "pairs": len(pairs), "documents": len(per_doc),
        "queries_per_document": round(len(pairs) / max(1, len(per_doc)), 3),
        "documents_with_2_or_more_levels": round(sum(len(v) >= 2 for v in per_doc.values()) / max(1, len(per_doc)), 4),
        "duplicate_query_rate": stats["duplicate_query_rate"],
        "levels": {name: info["count"] for name, info in stats["levels"].items()},
    }


@dataclass(kw_only=True)
class BuildD2Q(Step):
    """Human pairs (de-duplicated) + links the judge labelled with confidence ≥ τ. A human label always
    wins: linking never proposes a pair a human labelled."""

    inputs: ClassVar[tuple[str, ...]] = ("train", "links", "predictions")
    outputs: ClassVar[tuple[str, ...]] = ("pairs", "documents")
    SECONDS_PER_ITEM: ClassVar[float] = 6e-5  # per link

    scale: LevelScale
    config: AnnotationConfig

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if "links" not in sizes or "train" not in sizes:
            return None
        return Work(sizes["links"], {"pairs": sizes["train"] + sizes["links"]})  # at most: every link kept

    def run(self, ctx: StepContext) -> StepResult:
        human = unique_human_pairs(read_records(ctx.inputs["train"]))
        links = {link["id"]: link for link in read_records(ctx.inputs["links"])}
        scored = kept = 0
        kept_per_level: Counter = Counter()
        pairs = list(human)
        for prediction in read_records(ctx.inputs["predictions"]):
            scored += 1
            level = prediction["level"]
            if prediction["probs"][level] < self.config.min_confidence:
                continue
            link = links[prediction["id"]]
            pairs.append(LabeledPair(id=link["id"], query=link["query"], doc_id=link["doc_id"], doc=link["doc"],
                                     level=level, source="reannotated"))
            kept += 1
            kept_per_level[self.scale.name_of(level)] += 1

        by_doc: dict[str, dict] = {}
        for pair in pairs:
            record = by_doc.setdefault(pair.doc_id, {"doc_id": pair.doc_id, "doc": pair.doc, "queries": {
                level.name: [] for level in self.scale.levels}})
            record["queries"][self.scale.name_of(pair.level)].append(pair.query)
        outputs = ChunkedOutputs(ctx.step_dir, self.outputs)
        outputs.write_all({"pairs": [p.model_dump() for p in pairs], "documents": list(by_doc.values())},
                          ctx.chunk_size)
        return StepResult(outputs.counts(), {
            "links_scored": scored, "links_kept": kept,
            "kept_per_level": {level.name: kept_per_level[level.name] for level in self.scale.levels},
            "before": d2q_summary(human, self.scale), "after": d2q_summary(pairs, self.scale)})
