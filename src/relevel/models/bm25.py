"""BM25 over short Chinese (or mixed) texts: jieba word segmentation, bm25s for the index.

bm25s's own tokenizer splits on spaces and Latin word boundaries, which leaves Chinese text as one token
per run of characters; jieba segments it into words with the dictionary it ships.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import cache

import bm25s
import jieba
import numpy as np

from relevel.caches import library_cache
from relevel.data.schema import normalize_text

jieba.setLogLevel(logging.WARNING)
_WORDLIKE = re.compile(r"\w")  # keeps words and numbers, drops punctuation and spaces


@cache
def _segmenter() -> jieba.Tokenizer:
    """jieba's tokenizer, its dictionary cache in relevel's cache dir (else in the temp dir). The folder must
    exist: jieba does not make it, and prints a traceback when it cannot write the cache there."""
    folder = library_cache("jieba")
    folder.mkdir(parents=True, exist_ok=True)
    jieba.dt.tmp_dir = str(folder)
    return jieba.dt


def segment(text: str) -> list[str]:
    return [token for token in _segmenter().lcut(normalize_text(text)) if _WORDLIKE.search(token)]


class BM25Index:
    """Ranks the indexed texts for each search text."""

    def __init__(self, texts: Sequence[str]):
        if not texts:
            raise ValueError("cannot build a BM25 index over no texts")
        self.size = len(texts)
        self._bm25 = bm25s.BM25()
        self._bm25.index([segment(t) for t in texts], show_progress=False)

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores), each (len(texts), k), best first; k is capped at the index size."""
        tokens = [segment(t) or ["\u2205"] for t in texts]  # an all-punctuation text matches nothing
        return self._bm25.retrieve(tokens, k=min(k, self.size), show_progress=False, n_threads=1)

    def score_all(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), index size): every indexed text's score for each search text."""
        return np.stack([self._bm25.get_scores(segment(t) or ["\u2205"]) for t in texts])
