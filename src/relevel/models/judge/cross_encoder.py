"""Cross-encoder judge: a transformers sequence classifier with one logit per level (CPU default)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
)

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.models.hf import ProgressBar, early_stopping_arguments, load_pretrained, quiet_transformers
from relevel.models.judge import JUDGE_FILE
from relevel.models.judge.base import Judge, fit_temperature, level_weights
from relevel.models.judge.config import JudgeConfig


class _BalancedTrainer(Trainer):
    """Draws every level equally often (with replacement): the 'balanced_sampler' option."""

    def __init__(self, *args, sample_weights: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        self._sample_weights = torch.as_tensor(sample_weights, dtype=torch.double)

    def _get_train_sampler(self, train_dataset=None):
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(self._sample_weights, len(self._sample_weights),
                                                      replacement=True, generator=generator)


class CrossEncoderJudge(Judge):
    BACKEND = "cross-encoder"

    def __init__(self, scale: LevelScale, config: JudgeConfig, model: PreTrainedModel,
                 tokenizer: PreTrainedTokenizerBase, temperature: float = 1.0):
        super().__init__(scale, temperature)
        self.config, self.model, self.tokenizer = config, model, tokenizer

    @classmethod
    def from_base(cls, scale: LevelScale, config: JudgeConfig, encoder_store: Path | None = None
                  ) -> CrossEncoderJudge:
        tokenizer, model = load_pretrained(config.base_model, AutoModelForSequenceClassification,
                                           config.num_layers, num_labels=scale.num_levels)
        if model.config.pad_token_id is None:  # causal LMs (Qwen, ...) need one to batch
            model.config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
        return cls(scale, config, model, tokenizer)

    def _encode(self, queries: Sequence[str], docs: Sequence[str], **kwargs):
        return self.tokenizer(list(queries), list(docs), truncation="longest_first",
                              max_length=self.config.max_length, **kwargs)

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None) -> dict:
        config = self.config
        labels = np.array([p.level for p in train])
        inverse = level_weights(labels, self.scale)
        if config.freeze_word_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)

        steps_per_epoch = math.ceil(len(train) / config.batch_size)
        with tempfile.TemporaryDirectory(dir=work_dir) as checkpoints:
            args = early_stopping_arguments(
                checkpoints, config, steps_per_epoch, metric="macro_f1", greater_is_better=True,
                train_sampling_strategy="random" if config.rare_levels == "balanced_sampler" else "group_by_length")
            weights = torch.tensor(inverse, dtype=torch.float) if config.rare_levels == "class_weights" else None

            def loss(outputs, target, num_items_in_batch=None):
                return torch.nn.functional.cross_entropy(outputs.logits, target, weight=weights)

            trainer_cls, extra = Trainer, {}
            if config.rare_levels == "balanced_sampler":
                trainer_cls, extra = _BalancedTrainer, {"sample_weights": inverse[labels]}
            trainer = trainer_cls(
                model=self.model, args=args, train_dataset=self._dataset(train), eval_dataset=self._dataset(tune),
                data_collator=DataCollatorWithPadding(self.tokenizer), processing_class=self.tokenizer,
                compute_loss_func=loss, compute_metrics=_macro_f1,
                callbacks=[EarlyStoppingCallback(early_stopping_patience=config.patience),
                           ProgressBar("training judge", "macro_f1", progress)], **extra)
            trainer.remove_callback(PrinterCallback)
            result = trainer.train()
            history = [entry for entry in trainer.state.log_history if "eval_macro_f1" in entry]
            best_step = trainer.state.best_global_step
        self.model.eval()
        tune_logits = self.logits([p.query for p in tune], [p.doc for p in tune])
        tune_labels = np.array([p.level for p in tune])
        self.temperature = fit_temperature(tune_logits, tune_labels) if config.calibrate else 1.0
        return {
            "train_pairs": len(train), "tune_pairs": len(tune),
            "train_level_counts": np.bincount(labels, minlength=self.scale.num_levels).tolist(),
            "steps": result.global_step, "best_step": best_step, "train_seconds": result.metrics["train_runtime"],
            "train_loss": result.training_loss, "temperature": self.temperature,
            "tune_history": [{"step": e["step"], "macro_f1": e["eval_macro_f1"], "loss": e["eval_loss"]}
                             for e in history],
            "tune_logits": tune_logits, "tune_labels": tune_labels,
        }

    def _dataset(self, pairs: Sequence[LabeledPair]) -> list[dict]:
        encoded = self._encode([p.query for p in pairs], [p.doc for p in pairs])
        return [{"input_ids": ids, "attention_mask": mask, "labels": p.level}
                for ids, mask, p in zip(encoded["input_ids"], encoded["attention_mask"], pairs)]

    @torch.inference_mode()
    def batch_logits(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        batch = self._encode(queries, docs, padding=True, return_tensors="pt")
        return self.model(**batch).logits.float().numpy()

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / JUDGE_FILE).write_text(json.dumps({
            "backend": self.BACKEND, "scale": self.scale.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"), "temperature": self.temperature,
        }, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, encoder_store: Path | None = None) -> CrossEncoderJudge:
        quiet_transformers()
        meta = json.loads((Path(path) / JUDGE_FILE).read_text(encoding="utf-8"))
        model = AutoModelForSequenceClassification.from_pretrained(path)
        model.eval()
        return cls(LevelScale.model_validate(meta["scale"]), JudgeConfig.model_validate(meta["config"]),
                   model, AutoTokenizer.from_pretrained(path), meta["temperature"])


def _macro_f1(prediction) -> dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids
    return {"macro_f1": float(f1_score(labels, logits.argmax(axis=1), average="macro"))}
