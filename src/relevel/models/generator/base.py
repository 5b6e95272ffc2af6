"""The query generator interface: (document, target level) → queries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair


class QueryGenerator(ABC):
    def __init__(self, scale: LevelScale):
        self.scale = scale

    @classmethod
    def from_base(cls, scale: LevelScale, config, encoder_store: Path | None = None) -> QueryGenerator:
        """A new, untrained generator on the configured base model (`encoder_store`: as for the judge).
        The default suits backends that load nothing until they are used or fitted."""
        return cls(scale, config)

    @classmethod
    @abstractmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> QueryGenerator: ...

    @abstractmethod
    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None, init_from: Path | None = None) -> dict:
        """Learn (document, level) → query from labelled pairs; early-stop on `tune`. `init_from` warm-starts
        from a saved generator of the same backend (stage 2's rounds). Returns a report for the manifest."""

    @abstractmethod
    def generate(self, docs: Sequence[str], levels: Sequence[int], n: int, seed: int = 0,
                 progress: bool = False) -> list[list[str]]:
        """For each (document, level) row, up to `n` distinct non-empty queries (sampled)."""

    @abstractmethod
    def save(self, path: Path) -> None: ...

    def usage(self) -> dict:
        """Resources used so far that the manifest should show (an LLM backend's requests and tokens)."""
        return {}
