"""Embedding-features judge (the CPU default): a frozen bi-encoder reads each query and document once, on its
own; a gradient-boosted classifier reads features of the pair.

Why not only the cross-encoder: on 2 CPU cores a cross-encoder pays the full model for every (query, document)
pair, and e5-small learns the task slowly as one (issue 5's note). Here each unique text is encoded once, so
stage 1 can score tens of links per document for the price of encoding the documents, and the classifier
trains in about a minute. Measured on QBQTC dev it is also the more accurate of the two within the budget
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from difflib import SequenceMatcher
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.encoder import FrozenEncoder
from relevel.models.judge import JUDGE_FILE
from relevel.models.judge.base import Judge, fit_temperature, level_weights
from relevel.models.judge.config import JudgeConfig

CLASSIFIER_FILE = "classifier.joblib"
FEATURE_CHUNK = 8192  # pairs per feature matrix: bounds memory when stage 1 scores hundreds of thousands


def lexical_features(query: str, doc: str) -> list[float]:
    """Character overlap: the surface match that search relevance leans on, and that pooled vectors blur."""
    q, d = query.lower(), doc.lower()
    q_chars, d_chars = set(q), set(d)
    shared = len(q_chars & d_chars)
    longest = SequenceMatcher(None, q, d, autojunk=False).find_longest_match(0, len(q), 0, len(d)).size
    return [shared / max(len(q_chars), 1), shared / max(len(d_chars), 1), float(q in d),
            longest / max(len(q), 1), float(len(q)), float(np.log1p(len(d)))]


def unit_rows(states: np.ndarray) -> np.ndarray:
    return states / np.maximum(np.linalg.norm(states, axis=1, keepdims=True), 1e-6)


def pair_features(encoder: FrozenEncoder, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
    # Reductions run in float64 and the features are rounded to float32 once: the last bit of numpy's
    # vectorised float32 sums can depend on where an array lies in memory, and a resumed run fitted a
    # classifier that differed from the uninterrupted run's by such bits (tests/test_interrupted_runs.py).
    rows = []
    for query, doc in zip(queries, docs):
        (q_means, q_tokens), (d_means, d_tokens) = encoder.get("query", query), encoder.get("document", doc)
        q_means, d_means = q_means.astype(np.float64), d_means.astype(np.float64)
        u, v = q_means[-1], d_means[-1]
        cosines = (q_means * d_means).sum(axis=1)
        sim = unit_rows(q_tokens.astype(np.float64)) @ unit_rows(d_tokens.astype(np.float64)).T  # max-sim
        max_sim = [sim.max(1).mean(), sim.max(1).min(), sim.max(0).mean()]
        rows.append(np.concatenate([u * v, np.abs(u - v), cosines, max_sim, lexical_features(query, doc)]))
    return np.asarray(rows, dtype=np.float32)


def encoder_for(config: JudgeConfig, store: Path | None) -> FrozenEncoder:
    return FrozenEncoder(config.base_model, config.max_length, config.query_prefix, config.document_prefix,
                         config.num_layers, store)


class EmbeddingFeatureJudge(Judge):
    BACKEND = "embedding-features"

    def __init__(self, scale: LevelScale, config: JudgeConfig, encoder: FrozenEncoder,
                 classifier: HistGradientBoostingClassifier | None = None, temperature: float = 1.0,
                 level_shift: Sequence[float] | None = None):
        super().__init__(scale, temperature)
        self.config, self.encoder, self.classifier = config, encoder, classifier
        self.level_shift = np.zeros(scale.num_levels, np.float32) if level_shift is None else \
            np.asarray(level_shift, np.float32)

    @classmethod
    def from_base(cls, scale: LevelScale, config: JudgeConfig, encoder_store: Path | None = None
                  ) -> EmbeddingFeatureJudge:
        if config.rare_levels == "balanced_sampler":
            raise RelevelError("judge.rare_levels: 'balanced_sampler' is for the cross-encoder backend; "
                               "use 'class_weights' or 'none' with embedding-features")
        return cls(scale, config, encoder_for(config, encoder_store))

    def features(self, queries: Sequence[str], docs: Sequence[str], progress: bool = False) -> np.ndarray:
        self.encoder.encode(queries, "query", progress)
        self.encoder.encode(docs, "document", progress)
        return pair_features(self.encoder, queries, docs)

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None) -> dict:
        config = self.config
        labels, tune_labels = np.array([p.level for p in train]), np.array([p.level for p in tune])
        x_train = self.features([p.query for p in train], [p.doc for p in train], progress)
        x_tune = self.features([p.query for p in tune], [p.doc for p in tune], progress)
        # Early stopping on the query-disjoint tune slice's macro-F1 (X_val), not on a random share of train.
        classifier = HistGradientBoostingClassifier(
            learning_rate=config.boosting_learning_rate, max_iter=config.boosting_rounds, early_stopping=True,
            scoring="f1_macro", n_iter_no_change=config.boosting_patience, random_state=config.seed)
        classifier.fit(x_train, labels, X_val=x_tune, y_val=tune_labels)
        # Rare levels get weight by logit adjustment (Menon et al. 2021: add log inverse frequency), not by
        # sample weights: scikit-learn's weighted binning made a fit ~25x slower, and on QBQTC dev the two
        # scored alike (macro-F1 0.553 vs 0.549).
        self.level_shift = np.log(level_weights(labels, self.scale)).astype(np.float32) \
            if config.rare_levels == "class_weights" else np.zeros(self.scale.num_levels, np.float32)
        history = [{"step": step, "macro_f1": float(f1)} for step, f1 in enumerate(classifier.validation_score_)]
        self.classifier = classifier
        tune_logits = self._logits(x_tune)
        self.temperature = fit_temperature(tune_logits, tune_labels) if config.calibrate else 1.0
        return {
            "train_pairs": len(train), "tune_pairs": len(tune), "train_level_counts":
            np.bincount(labels, minlength=self.scale.num_levels).tolist(), "features": int(x_train.shape[1]),
            "steps": classifier.n_iter_, "best_step": max(history, key=lambda h: h["macro_f1"])["step"],
            "temperature": self.temperature,
            "tune_history": history, "tune_logits": tune_logits, "tune_labels": tune_labels,
        }

    def _logits(self, features: np.ndarray) -> np.ndarray:
        # Log-probabilities serve as logits: temperature scaling and softmax then work as for any backend.
        log_probs = np.log(np.clip(self.classifier.predict_proba(features), 1e-7, 1.0))
        return (log_probs + self.level_shift).astype(np.float32)

    def logits(self, queries: Sequence[str], docs: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """Encodes each unique text once, then scores the pairs in chunks that bound memory."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries but {len(docs)} documents")
        self.encoder.encode(queries, "query", progress, batch_size)
        self.encoder.encode(docs, "document", progress, batch_size)
        out = np.zeros((len(queries), self.scale.num_levels), dtype=np.float32)
        for start in range(0, len(queries), FEATURE_CHUNK):
            end = start + FEATURE_CHUNK
            out[start:end] = self._logits(pair_features(self.encoder, queries[start:end], docs[start:end]))
        return out

    def batch_logits(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        return self.logits(queries, docs)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.classifier, path / CLASSIFIER_FILE)
        # The encoder is frozen, so the base model's name is all that is needed to rebuild it.
        (path / JUDGE_FILE).write_text(json.dumps({
            "backend": self.BACKEND, "scale": self.scale.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"), "temperature": self.temperature,
            "level_shift": self.level_shift.tolist(),
        }, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> EmbeddingFeatureJudge:
        meta = json.loads((Path(path) / JUDGE_FILE).read_text(encoding="utf-8"))
        config = JudgeConfig.model_validate(meta["config"])
        try:
            classifier = joblib.load(Path(path) / CLASSIFIER_FILE)
        except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
            raise RelevelError(f"{Path(path) / CLASSIFIER_FILE}: unreadable judge classifier ({exc})") from None
        return cls(LevelScale.model_validate(meta["scale"]), config, encoder_for(config, encoder_store), classifier,
                   meta["temperature"], meta["level_shift"])
