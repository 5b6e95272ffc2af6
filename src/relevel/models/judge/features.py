"""Embedding-features judge (the CPU default): a frozen bi-encoder reads each query and document once, on its
own; a gradient-boosted classifier reads features of the pair.

Why not only the cross-encoder: on 2 CPU cores a cross-encoder pays the full model for every (query, document)
pair, and e5-small learns the task slowly as one (issue 5's note). Here each unique text is encoded once, so
stage 1 can score tens of links per document for the price of encoding the documents, and the classifier
trains in about a minute. Measured on QBQTC dev it is also the more accurate of the two within the budget
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from difflib import SequenceMatcher
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.base_model import resolve_model
from relevel.models.hf import quiet_transformers
from relevel.models.judge import JUDGE_FILE
from relevel.models.judge.base import Judge, fit_temperature, level_weights
from relevel.models.judge.config import OFFLINE_BASE, JudgeConfig

CLASSIFIER_FILE = "classifier.joblib"
FEATURE_CHUNK = 8192  # pairs per feature matrix: bounds memory when stage 1 scores hundreds of thousands


class FrozenEncoder:
    """Mean-pooled states at a few depths plus last-layer token states, per unique text, kept in memory."""

    def __init__(self, config: JudgeConfig):
        quiet_transformers()
        self.config = config
        path = resolve_model(config.base_model)
        extra = {"num_hidden_layers": config.num_layers} if config.num_layers else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path, **extra).eval()
        except OSError as exc:  # transformers' way of saying "not found here or on the hub"
            raise RelevelError(f"cannot load base model {config.base_model!r}: {exc}. Offline, use "
                               f"'{OFFLINE_BASE}' or a local model folder.") from None
        depth = self.model.config.num_hidden_layers
        self.layers = sorted({max(1, depth // 2), max(1, 3 * depth // 4), depth})  # similarity at 3 depths
        self.cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def encode(self, texts: Sequence[str], kind: str, progress: bool = False, batch_size: int = 64) -> None:
        prefix = self.config.query_prefix if kind == "query" else self.config.document_prefix
        todo = sorted({t for t in texts if (kind, t) not in self.cache}, key=len)  # length-sorted batches
        with tqdm(total=len(todo), desc=f"encoding {kind}s", unit="text", disable=not progress or not todo,
                  leave=False) as bar, torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                encoded = self.tokenizer([prefix + t for t in batch], padding=True, truncation=True,
                                         max_length=self.config.max_length, return_tensors="pt")
                states = self.model(**encoded, output_hidden_states=True).hidden_states
                mask = encoded["attention_mask"].unsqueeze(-1).float()
                means = torch.stack([(states[i] * mask).sum(1) / mask.sum(1) for i in self.layers], dim=1)
                means = torch.nn.functional.normalize(means, dim=-1).numpy()
                last = torch.nn.functional.normalize(states[-1], dim=-1).numpy().astype(np.float16)
                for row, text in enumerate(batch):
                    length = int(encoded["attention_mask"][row].sum())
                    self.cache[kind, text] = means[row], last[row, 1:max(2, length - 1)]  # drop [CLS]/[SEP]
                bar.update(len(batch))

    def get(self, kind: str, text: str) -> tuple[np.ndarray, np.ndarray]:
        return self.cache[kind, text]


def lexical_features(query: str, doc: str) -> list[float]:
    """Character overlap: the surface match that search relevance leans on, and that pooled vectors blur."""
    q, d = query.lower(), doc.lower()
    q_chars, d_chars = set(q), set(d)
    shared = len(q_chars & d_chars)
    longest = SequenceMatcher(None, q, d, autojunk=False).find_longest_match(0, len(q), 0, len(d)).size
    return [shared / max(len(q_chars), 1), shared / max(len(d_chars), 1), float(q in d),
            longest / max(len(q), 1), float(len(q)), float(np.log1p(len(d)))]


def pair_features(encoder: FrozenEncoder, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
    rows = []
    for query, doc in zip(queries, docs):
        (q_means, q_tokens), (d_means, d_tokens) = encoder.get("query", query), encoder.get("document", doc)
        u, v = q_means[-1], d_means[-1]
        cosines = (q_means * d_means).sum(axis=1)
        sim = q_tokens.astype(np.float32) @ d_tokens.astype(np.float32).T  # token-level max-sim, ColBERT-like
        max_sim = [sim.max(1).mean(), sim.max(1).min(), sim.max(0).mean()]
        rows.append(np.concatenate([u * v, np.abs(u - v), cosines, max_sim, lexical_features(query, doc)]))
    return np.asarray(rows, dtype=np.float32)


class EmbeddingFeatureJudge(Judge):
    BACKEND = "embedding-features"

    def __init__(self, scale: LevelScale, config: JudgeConfig, encoder: FrozenEncoder,
                 classifier: HistGradientBoostingClassifier | None = None, temperature: float = 1.0):
        super().__init__(scale, temperature)
        self.config, self.encoder, self.classifier = config, encoder, classifier

    @classmethod
    def from_base(cls, scale: LevelScale, config: JudgeConfig) -> EmbeddingFeatureJudge:
        if config.rare_levels == "balanced_sampler":
            raise RelevelError("judge.rare_levels: 'balanced_sampler' is for the cross-encoder backend; "
                               "use 'class_weights' or 'none' with embedding-features")
        return cls(scale, config, FrozenEncoder(config))

    def features(self, queries: Sequence[str], docs: Sequence[str], progress: bool = False) -> np.ndarray:
        self.encoder.encode(queries, "query", progress)
        self.encoder.encode(docs, "document", progress)
        return pair_features(self.encoder, queries, docs)

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None) -> dict:
        config = self.config
        labels, tune_labels = np.array([p.level for p in train]), np.array([p.level for p in tune])
        weights = level_weights(labels, self.scale)
        x_train = self.features([p.query for p in train], [p.doc for p in train], progress)
        x_tune = self.features([p.query for p in tune], [p.doc for p in tune], progress)
        sample_weight = weights[labels] if config.rare_levels == "class_weights" else None
        classifier = HistGradientBoostingClassifier(
            learning_rate=config.boosting_learning_rate, max_iter=0, warm_start=True, early_stopping=False,
            random_state=config.seed)
        # Early stopping on the query-disjoint tune slice's macro-F1 (the library's own early stopping
        # holds out a random, not query-disjoint, share of train): grow in stages, keep the best.
        history, best, best_f1, stale = [], None, -1.0, 0
        stage = max(1, config.boosting_rounds // 12)
        with tqdm(total=config.boosting_rounds, desc="training judge", unit="round", disable=not progress,
                  leave=False) as bar:
            while classifier.max_iter < config.boosting_rounds and stale < config.patience:
                classifier.max_iter = min(config.boosting_rounds, classifier.max_iter + stage)
                classifier.fit(x_train, labels, sample_weight=sample_weight)
                f1 = float(f1_score(tune_labels, classifier.predict(x_tune), average="macro"))
                history.append({"step": classifier.max_iter, "macro_f1": f1})
                if f1 > best_f1:
                    best, best_f1, stale = copy.deepcopy(classifier), f1, 0
                else:
                    stale += 1
                bar.update(classifier.max_iter - bar.n)
                bar.set_postfix(macro_f1=f"{f1:.4f}", refresh=False)
        self.classifier = best
        tune_logits = self._logits(x_tune)
        self.temperature = fit_temperature(tune_logits, tune_labels) if config.calibrate else 1.0
        return {
            "train_pairs": len(train), "tune_pairs": len(tune), "train_level_counts":
            np.bincount(labels, minlength=self.scale.num_levels).tolist(), "features": int(x_train.shape[1]),
            "steps": history[-1]["step"], "best_step": best.max_iter, "temperature": self.temperature,
            "tune_history": history, "tune_logits": tune_logits, "tune_labels": tune_labels,
        }

    def _logits(self, features: np.ndarray) -> np.ndarray:
        # Log-probabilities serve as logits: temperature scaling and softmax then work as for any backend.
        return np.log(np.clip(self.classifier.predict_proba(features), 1e-7, 1.0)).astype(np.float32)

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
        }, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> EmbeddingFeatureJudge:
        meta = json.loads((Path(path) / JUDGE_FILE).read_text(encoding="utf-8"))
        config = JudgeConfig.model_validate(meta["config"])
        try:
            classifier = joblib.load(Path(path) / CLASSIFIER_FILE)
        except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
            raise RelevelError(f"{Path(path) / CLASSIFIER_FILE}: unreadable judge classifier ({exc})") from None
        return cls(LevelScale.model_validate(meta["scale"]), config, FrozenEncoder(config), classifier,
                   meta["temperature"])
