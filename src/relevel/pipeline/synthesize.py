"""Stage 2, generation: decide how many queries each level needs, then have the generator write candidates
for unseen documents at those levels."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from relevel.config import SynthesisConfig
from relevel.data.scale import LevelScale
from relevel.models.generator import QueryGenerator, load_generator
from relevel.models.generator.config import CPU_SECONDS_PER_QUERY
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.step import RUNTIME, RecordStep, StepContext, Work, encoder_store

MIN_YIELD = 0.05  # a level that kept nothing last round still gets requests, just not unboundedly many


@dataclass(frozen=True)
class LevelPlan:
    """Share of a round's requests per level, and how many kept queries each level still needs
    (None: no limit)."""

    shares: tuple[float, ...]
    needed: tuple[int | None, ...]

    @property
    def done(self) -> bool:
        return sum(self.shares) == 0


def plan_levels(scale: LevelScale, config: SynthesisConfig, counts: Counter, yields: dict[int, float]
                ) -> LevelPlan:
    """`counts`: real plus already-kept synthetic examples per level. Requests go where the target
    distribution has a deficit, scaled up where the previous round's yield was low."""
    names = [level.name for level in scale.levels]
    if config.only is not None:
        wanted = [1.0 if name in config.only else 0.0 for name in names]
        total = sum(wanted)
        return LevelPlan(tuple(w / total for w in wanted), tuple(None for _ in names))
    if config.target_distribution == "balance":
        target = [1.0] * len(names)
    else:
        target = [config.target_distribution.get(name, 0.0) for name in names]
    # the smallest final set with these shares that needs no level to shrink
    final_total = max(counts[level] / share for level, share in enumerate(target) if share > 0)
    deficit = [max(0, round(share * final_total) - counts[level]) for level, share in enumerate(target)]
    weights = [d / max(yields.get(level, 1.0), MIN_YIELD) for level, d in enumerate(deficit)]
    total = sum(weights)
    return LevelPlan(tuple(w / total if total else 0.0 for w in weights),
                     tuple(d if target[level] > 0 else 0 for level, d in enumerate(deficit)))


def allocate(shares: tuple[float, ...], total: int) -> list[int]:
    """Largest-remainder rounding of `shares × total` to integers that sum to `total`."""
    exact = np.asarray(shares) * total
    counts = np.floor(exact).astype(int)
    for level in np.argsort(-(exact - counts), kind="stable")[:total - counts.sum()]:
        counts[level] += 1
    return counts.tolist()


def round_documents(documents: list[dict], config: SynthesisConfig, round_index: int) -> list[dict]:
    """This round's slice of a seeded permutation of the unseen documents (each round new ones, while
    there are any)."""
    if config.documents_per_round is None or config.documents_per_round >= len(documents):
        return documents
    order = np.random.default_rng(config.seed).permutation(len(documents))
    size = config.documents_per_round
    start = ((round_index - 1) * size) % len(documents)
    picked = [order[(start + i) % len(documents)] for i in range(size)]
    return [documents[i] for i in sorted(picked)]


def level_counts(records: Iterator[dict], key: str = "level") -> Counter:
    return Counter(int(r[key]) for r in records)


def round_yields(kept: list[dict], dropped: list[dict], round_index: int) -> dict[int, float]:
    """Kept / generated per target level in one round (both carry the target as `level`)."""
    made = level_counts(r for r in [*kept, *dropped] if r["round"] == round_index)
    hit = level_counts(r for r in kept if r["round"] == round_index)
    return {level: hit[level] / n for level, n in made.items() if n}


@dataclass(kw_only=True)
class RunsGenerator:
    """A step that writes queries with the trained generator bound to its `generator` input."""

    # only for the dry run's projection: the generator is an input, so its backend is in the cache key already
    generator_backend: str = field(default="seq2seq", metadata=RUNTIME)

    def seconds_per_query(self, measured_with_seq2seq: float) -> float:
        """The step's cost per query, measured with the seq2seq generator, with this backend's generation cost
        in place of seq2seq's."""
        return measured_with_seq2seq + CPU_SECONDS_PER_QUERY[self.generator_backend] - CPU_SECONDS_PER_QUERY["seq2seq"]


@dataclass(kw_only=True)
class GenerateCandidates(RunsGenerator, RecordStep):
    """One round's candidates: `candidates` queries for each planned (document, target level) request."""

    inputs: ClassVar[tuple[str, ...]] = ("generator", "documents", "train")
    optional_inputs: ClassVar[tuple[str, ...]] = ("kept", "dropped")  # the previous round's filter
    outputs: ClassVar[tuple[str, ...]] = ("candidates",)
    SECONDS_PER_ITEM: ClassVar[float] = 0.027  # per candidate query (seq2seq)

    scale: LevelScale
    config: SynthesisConfig
    round: int

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if "documents" not in sizes:
            return None
        documents = min(self.config.documents_per_round or sizes["documents"], sizes["documents"])
        # at most: a round whose plan is already met requests nothing
        candidates = documents * self.config.requests_per_document * self.config.candidates
        return Work(candidates, {"candidates": candidates}, generated=candidates,
                    seconds=candidates * self.seconds_per_query(self.SECONDS_PER_ITEM))

    def plan(self, ctx: StepContext) -> tuple[LevelPlan, list[dict]]:
        kept = list(read_records(ctx.inputs["kept"])) if "kept" in ctx.inputs else []
        dropped = list(read_records(ctx.inputs["dropped"])) if "dropped" in ctx.inputs else []
        counts = level_counts(read_records(ctx.inputs["train"])) + level_counts(iter(kept))
        plan = plan_levels(self.scale, self.config, counts, round_yields(kept, dropped, self.round - 1))
        unique = {r["id"]: r["text"] for r in read_records(ctx.inputs["documents"])}
        documents = round_documents([{"doc_id": i, "doc": unique[i]} for i in sorted(unique)], self.config,
                                    self.round)
        if plan.done:
            return plan, []
        per_level = allocate(plan.shares, len(documents) * self.config.requests_per_document)
        # sorted by level and dealt round-robin: one document's requests are different levels while
        # no level needs more requests than there are documents
        levels = [level for level, n in enumerate(per_level) for _ in range(n)]
        requests = [{"request": f"r{self.round}-{documents[i % len(documents)]['doc_id']}-{i // len(documents)}",
                     "doc_id": documents[i % len(documents)]["doc_id"], "doc": documents[i % len(documents)]["doc"],
                     "target": level} for i, level in enumerate(levels)]
        return plan, sorted(requests, key=lambda r: r["request"])

    def items(self, ctx: StepContext):
        self._generator: QueryGenerator | None = None
        self._generator_dir, self._store = ctx.inputs["generator"], encoder_store(ctx)
        self._plan, requests = self.plan(ctx)
        self._requested = level_counts(iter(requests), "target")
        return iter(requests)

    def total(self, ctx: StepContext) -> int | None:
        return len(self.plan(ctx)[1])

    def process(self, batch: list[dict]) -> dict[str, list[dict]]:
        if self._generator is None:
            self._generator = load_generator(self._generator_dir, self._store)
        # seeded by the chunk's first request: a chunk redone after a kill writes the same queries
        seed = zlib.crc32(f"{self.config.seed}/{batch[0]['request']}".encode())
        queries = self._generator.generate([r["doc"] for r in batch], [r["target"] for r in batch],
                                           self.config.candidates, seed=seed)
        return {"candidates": [{"id": f"{r['request']}-{j}", **r, "query": query, "round": self.round}
                               for r, found in zip(batch, queries) for j, query in enumerate(found)]}

    def metrics(self, ctx: StepContext, outputs: ChunkedOutputs) -> dict[str, Any]:
        generated = level_counts(read_records(outputs.dirs["candidates"]), "target")
        names = [level.name for level in self.scale.levels]
        return {"round": self.round, "plan_shares": dict(zip(names, self._plan.shares)),
                "still_needed": dict(zip(names, self._plan.needed)),
                "requested": {name: self._requested[level] for level, name in enumerate(names)},
                "generated": {name: generated[level] for level, name in enumerate(names)}}

    def usage(self) -> dict[str, Any]:
        return self._generator.usage() if self._generator is not None else {}
