"""The judge (score model) interface: (query, document) → level, with calibrated probabilities.

The base class owns batching, length-sorting, progress and temperature scaling; a backend implements
`batch_logits` for one batch, plus `fit`, `save` and `load`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError


@dataclass(frozen=True)
class JudgePrediction:
    levels: np.ndarray  # (n,) predicted level
    probs: np.ndarray  # (n, num_levels), calibrated


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


class Judge(ABC):
    def __init__(self, scale: LevelScale, temperature: float = 1.0):
        self.scale, self.temperature = scale, temperature

    @classmethod
    def from_base(cls, scale: LevelScale, config, encoder_store: Path | None = None) -> Judge:
        """A new, untrained judge on the configured base model. `encoder_store`: a folder where a backend
        with a frozen encoder keeps its encodings for other steps of the run (others ignore it). The default
        suits backends that load nothing until they are used or fitted."""
        return cls(scale, config)

    @classmethod
    @abstractmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> Judge: ...

    @abstractmethod
    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None) -> dict:
        """Train on `train`; early-stop and calibrate on `tune` (never on the evaluation split).
        Returns a report for the manifest, with the tune slice's logits and labels."""

    @abstractmethod
    def batch_logits(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """(len(queries), num_levels) uncalibrated logits for one batch."""

    @abstractmethod
    def save(self, path: Path) -> None: ...

    def usage(self) -> dict:
        """Resources used so far that the manifest should show (an LLM backend's requests and tokens)."""
        return {}

    def logits(self, queries: Sequence[str], docs: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """All logits, in input order; batches hold pairs of similar length to cut padding."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries but {len(docs)} documents")
        order = np.argsort([len(q) + len(d) for q, d in zip(queries, docs)], kind="stable")
        out = np.zeros((len(queries), self.scale.num_levels), dtype=np.float32)
        with tqdm(total=len(order), desc="judging", unit="pair", disable=not progress, leave=False) as bar:
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                out[index] = self.batch_logits([queries[i] for i in index], [docs[i] for i in index])
                bar.update(len(index))
        return out

    def predict(self, queries: Sequence[str], docs: Sequence[str], batch_size: int = 64,
                progress: bool = False) -> JudgePrediction:
        probs = softmax(self.logits(queries, docs, batch_size, progress), self.temperature)
        return JudgePrediction(probs.argmax(axis=1), probs)

    def predict_pairs(self, pairs: Sequence[LabeledPair], batch_size: int = 64,
                      progress: bool = False) -> JudgePrediction:
        return self.predict([p.query for p in pairs], [p.doc for p in pairs], batch_size, progress)


def level_weights(labels: np.ndarray, scale: LevelScale) -> np.ndarray:
    """Inverse-frequency weight per level; a level with no training example is an error, not a zero."""
    counts = np.bincount(labels, minlength=scale.num_levels)
    if (counts == 0).any():
        missing = [scale.name_of(i) for i in np.flatnonzero(counts == 0)]
        raise RelevelError(f"the training pairs have no example of level(s) {missing}; the judge cannot learn them")
    return len(labels) / (scale.num_levels * counts)


MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar T minimising the NLL of softmax(logits / T).

    Written here because neither scikit-learn nor transformers ships it for multi-class logits.
    """
    import torch

    logits_t, labels_t = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # optimise log T so T stays > 0
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    optimiser.step(closure)
    # A judge whose logits carry no signal has no finite optimum (T runs off); keep T in a sane range.
    return float(log_t.detach().exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE))
