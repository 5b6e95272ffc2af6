"""Statistics of the prepared splits, kept in the step's manifest for the summary and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from relevel.data.scale import LevelScale
from relevel.data.schema import Document, LabeledPair
from relevel.data.stats import document_stats, length_percentiles, pair_stats
from relevel.models.hf import load_tokenizer
from relevel.pipeline.io import read_records
from relevel.pipeline.step import Step, StepContext, StepResult, Work

PAIR_SPLITS = ("train", "dev")
CUT_WARNING_SHARE = 0.05  # above this share of a split's texts, the summary warns that a model cuts them


class TokenLimit(NamedTuple):
    """A model setting that cuts its input texts: which setting, on which tokenizer, at how many tokens."""
    setting: str  # e.g. "embedder.max_seq_length"
    base_model: str
    max_tokens: int
    texts: str  # "documents" or "queries"
    prefix: str = ""  # the prompt the model puts before each text
    special_tokens: bool = True  # whether the limit counts the tokenizer's special tokens



@dataclass(kw_only=True)
class DataStats(Step):
    optional_inputs: ClassVar[tuple[str, ...]] = ("train", "dev", "unlabeled", "distractors")
    SECONDS_PER_ITEM: ClassVar[float] = 2e-5

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        return Work(sum(sizes.values()))

    scale: LevelScale
    token_limits: list[TokenLimit] = field(default_factory=list)

    def run(self, ctx: StepContext) -> StepResult:
        stats: dict = {}
        texts: dict[str, dict[str, set[str]]] = {}
        for split, folder in ctx.inputs.items():
            if split in PAIR_SPLITS:
                pairs = [LabeledPair(**r) for r in read_records(folder)]
                stats[split] = pair_stats(pairs, self.scale)
                texts[split] = {"documents": {p.doc for p in pairs}, "queries": {p.query for p in pairs}}
            else:
                documents = [Document(**r) for r in read_records(folder)]
                stats[split] = document_stats(documents)
                texts[split] = {"documents": {d.text for d in documents}}
        tokenizers = {name: load_tokenizer(name) for name in {limit.base_model for limit in self.token_limits}}
        for split, kinds in texts.items():
            stats[split]["token_limits"] = [
                cut_texts(limit, tokenizers[limit.base_model], kinds[limit.texts])
                for limit in self.token_limits if kinds.get(limit.texts)]
        return StepResult(metrics=stats)


def cut_texts(limit: TokenLimit, tokenizer, texts: set[str]) -> dict:
    """The distinct texts' length in the model's tokens (special tokens and prompt included) and how many
    exceed the setting: the model cuts those without a word, so the summary says it instead."""
    encoded = tokenizer([limit.prefix + t for t in texts], add_special_tokens=limit.special_tokens)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    cut = sum(length > limit.max_tokens for length in lengths)
    return {"setting": limit.setting, "limit": limit.max_tokens, "texts": limit.texts,
            "tokens": length_percentiles(lengths), "cut": cut, "share_cut": round(cut / len(lengths), 4)}
