"""Stage 2, filtering: keep a generated query only where the judge confirms its target level; count every
drop by reason."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import ClassVar

from relevel.config import SynthesisConfig
from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair, normalize_text
from relevel.models.llm.config import LLMConfig
from relevel.models.llm.order import LLMOrderCheck
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.step import Step, StepContext, StepResult, Work
from relevel.pipeline.synthesize import level_counts, plan_levels

_NOT_WORD = re.compile(r"[\W_]+")
DROP_REASONS = ("empty", "level mismatch", "low confidence", "real query", "duplicate", "order", "order (LLM)",
                "over plan")


def kept_pairs(folder) -> list[LabeledPair]:
    """A filter's kept queries as training pairs (source `synthetic-r<round>`)."""
    return [LabeledPair(id=r["id"], query=r["query"], doc_id=r["doc_id"], doc=r["doc"], level=r["level"],
                        source=f"synthetic-r{r['round']}") for r in read_records(folder)]


def near_duplicate_key(text: str) -> str:
    """Queries that differ only in case, width, spacing or punctuation count as one."""
    return _NOT_WORD.sub("", normalize_text(text))


def order_conflicts(kept: list[dict]) -> set[str]:
    """Ids to drop so that, within one document, a higher target level never has a judged expected level
    at or below a lower one's; of each contradicting pair the less confident query goes."""
    dropped: set[str] = set()
    by_doc: dict[str, list[dict]] = defaultdict(list)
    for record in kept:
        by_doc[record["doc_id"]].append(record)
    for records in by_doc.values():
        for low in sorted(records, key=lambda r: r["level"]):
            for high in records:
                if (high["level"] > low["level"] and low["id"] not in dropped and high["id"] not in dropped
                        and low["expected_level"] >= high["expected_level"]):
                    dropped.add(min(low, high, key=lambda r: r["probability"])["id"])
    return dropped


@dataclass(kw_only=True)
class FilterCandidates(Step):
    """Keeps a round's candidates that the judge places at their target level with enough probability,
    that are new (not a real query, not a near-duplicate for their document in this or an earlier round),
    consistently ordered per document, and within what the plan still needs per level. `kept` holds every
    round's kept queries so far (the next round's training data); `dropped` this round's, with a reason."""

    inputs: ClassVar[tuple[str, ...]] = ("candidates", "predictions", "train")
    optional_inputs: ClassVar[tuple[str, ...]] = ("kept",)  # the previous round's filter
    outputs: ClassVar[tuple[str, ...]] = ("kept", "dropped")
    SECONDS_PER_ITEM: ClassVar[float] = 1e-4  # per candidate

    scale: LevelScale
    config: SynthesisConfig
    round: int
    generator: str  # the checkpoint that wrote this round's candidates, recorded with each kept query
    llm: LLMConfig | None = None  # with an endpoint: also the LLM's pairwise order check

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if "candidates" not in sizes:
            return None
        # at most: every candidate kept (the yield is what the round measures)
        return Work(sizes["candidates"], {"kept": sizes["candidates"] + sizes.get("kept", 0)})

    def run(self, ctx: StepContext) -> StepResult:
        earlier = list(read_records(ctx.inputs["kept"])) if "kept" in ctx.inputs else []
        real = list(read_records(ctx.inputs["train"]))
        plan = plan_levels(self.scale, self.config, level_counts(iter(real)) + level_counts(iter(earlier)), {})
        real_queries = {near_duplicate_key(r["query"]) for r in real}
        seen = {(r["doc_id"], near_duplicate_key(r["query"])) for r in earlier}
        judged = {p["id"]: p for p in read_records(ctx.inputs["predictions"])}

        survivors, dropped = [], []
        for candidate in read_records(ctx.inputs["candidates"]):
            probs = judged[candidate["id"]]["probs"]
            target, key = candidate["target"], near_duplicate_key(candidate["query"])
            record = {**candidate, "level": target, "probability": probs[target],
                      "judged": judged[candidate["id"]]["level"],
                      "expected_level": sum(level * p for level, p in enumerate(probs))}
            reason = ("empty" if not key
                      else "level mismatch" if record["judged"] != target
                      else "low confidence" if probs[target] < self.config.min_probability
                      else "real query" if key in real_queries
                      else "duplicate" if (candidate["doc_id"], key) in seen
                      else None)
            if reason is None:
                seen.add((candidate["doc_id"], key))
                survivors.append(record)
            else:
                dropped.append({**record, "reason": reason})
        if self.config.order_check:
            conflicting = order_conflicts(survivors)
            dropped += [{**r, "reason": "order"} for r in survivors if r["id"] in conflicting]
            survivors = [r for r in survivors if r["id"] not in conflicting]
        llm_usage = {}
        if self.llm is not None:
            check = LLMOrderCheck(self.scale, self.llm)
            conflicting = check.contradicting(survivors, ctx.progress)
            dropped += [{**r, "reason": "order (LLM)"} for r in survivors if r["id"] in conflicting]
            survivors = [r for r in survivors if r["id"] not in conflicting]
            llm_usage = {"llm": {**check.client.stats.as_dict(), "pairs_compared": check.compared}}
        kept = []
        for level, needed in enumerate(plan.needed):  # the most confident first, up to what the plan needs
            at_level = sorted((r for r in survivors if r["level"] == level), key=lambda r: -r["probability"])
            limit = len(at_level) if needed is None else needed
            kept += at_level[:limit]
            dropped += [{**r, "reason": "over plan"} for r in at_level[limit:]]
        kept = [{"id": r["id"], "query": r["query"], "doc_id": r["doc_id"], "doc": r["doc"], "level": r["level"],
                 "probability": r["probability"], "round": self.round, "generator": self.generator}
                for r in sorted(kept, key=lambda r: r["id"])]
        ChunkedOutputs(ctx.step_dir, self.outputs).write_all({"kept": earlier + kept, "dropped": dropped},
                                                             ctx.chunk_size)
        # counts name the outputs' records (`kept` holds earlier rounds too); this round's yield is its own count
        return StepResult(counts={"kept": len(earlier) + len(kept), "kept_this_round": len(kept),
                                  "dropped": len(dropped)},
                          metrics={**self.summary(real, earlier, kept, dropped), **llm_usage})

    def summary(self, real: list[dict], earlier: list[dict], kept: list[dict], dropped: list[dict]) -> dict:
        names = [level.name for level in self.scale.levels]
        generated = level_counts(iter([*dropped, *kept]), "level")
        hit = level_counts(iter(kept))
        reasons = Counter(r["reason"] for r in dropped)
        real_counts, synthetic = level_counts(iter(real)), level_counts(iter([*earlier, *kept]))
        return {
            "round": self.round,
            "generated": {n: generated[lvl] for lvl, n in enumerate(names)},
            "kept": {n: hit[lvl] for lvl, n in enumerate(names)},
            "yield": {n: hit[lvl] / generated[lvl] if generated[lvl] else None for lvl, n in enumerate(names)},
            "dropped_by_reason": {reason: reasons[reason] for reason in DROP_REASONS},
            "levels_real": {n: real_counts[lvl] for lvl, n in enumerate(names)},
            "levels_real_plus_synthetic": {n: real_counts[lvl] + synthetic[lvl] for lvl, n in enumerate(names)},
        }
