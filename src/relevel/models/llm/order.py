"""The LLM order check: for one document, two queries meant for different levels; the model says which one
the document is more relevant to. A pair the model orders against its levels is a contradiction."""

from __future__ import annotations

import zlib
from collections import defaultdict

from relevel.data.scale import LevelScale
from relevel.models.llm.client import ChatRequest, LLMClient
from relevel.models.llm.config import LLMConfig
from relevel.models.llm.parse import CHOICE_SCHEMA, choice_of
from relevel.models.llm.prompts import Prompts


class LLMOrderCheck:
    def __init__(self, scale: LevelScale, config: LLMConfig):
        self.scale, self.prompts = scale, Prompts(config.prompts_dir)
        self.client = LLMClient(config)

    def contradicting(self, records: list[dict], progress: bool = False) -> set[str]:
        """Ids to drop. `records` carry id, doc_id, doc, query, level, probability. Within each document
        the queries sorted by level are compared neighbour to neighbour (levels differing), A/B order drawn
        per pair so the model's position bias cannot favour one level; of a contradicting pair the less
        confident query goes. An unparseable answer decides nothing (counted in the client's stats)."""
        by_doc: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            by_doc[record["doc_id"]].append(record)
        pairs = []
        for doc_records in by_doc.values():
            ordered = sorted(doc_records, key=lambda r: (r["level"], r["id"]))
            pairs += [(low, high) for low, high in zip(ordered, ordered[1:]) if low["level"] < high["level"]]
        swapped = [zlib.crc32(f"{low['id']}|{high['id']}".encode()) % 2 == 1 for low, high in pairs]
        requests = [ChatRequest(self.prompts.messages("order", scale=self.scale, document=low["doc"],
                                                      query_a=(low if swap else high)["query"],
                                                      query_b=(high if swap else low)["query"]),
                                schema=CHOICE_SCHEMA)
                    for (low, high), swap in zip(pairs, swapped)]
        answers = self.client.complete(requests, choice_of, progress, "LLM order check")
        dropped: set[str] = set()
        for (low, high), swap, choice in zip(pairs, swapped, answers):
            lower_won = choice == ("A" if swap else "B")
            if choice is not None and lower_won and low["id"] not in dropped and high["id"] not in dropped:
                dropped.add(min(low, high, key=lambda r: r["probability"])["id"])
        self.compared = len(pairs)
        return dropped
