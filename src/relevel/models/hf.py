"""Shared transformers plumbing for the model backends."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, TrainingArguments
from transformers.utils import logging

from relevel.errors import RelevelError
from relevel.models.base_model import OFFLINE_BASE, resolve_model
from relevel.models.registry import check_weights


def quiet_transformers() -> None:
    """Our own progress bars and reports replace transformers' per-save bars and load reports."""
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_pretrained(base_model: str, model_class, num_layers: int | None = None, **kwargs
                    ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model from the offline base, a local folder or a hub name; a clear error if none loads."""
    quiet_transformers()
    path = resolve_model(base_model)
    if Path(path).is_dir():
        check_weights(path)
    if num_layers:
        kwargs["num_hidden_layers"] = num_layers
    with _load_error(base_model):
        return AutoTokenizer.from_pretrained(path), model_class.from_pretrained(path, **kwargs)


def load_tokenizer(base_model: str) -> PreTrainedTokenizerBase:
    """The base model's tokenizer alone (to measure texts in its tokens without loading weights)."""
    quiet_transformers()
    with _load_error(base_model):
        return AutoTokenizer.from_pretrained(resolve_model(base_model))


@contextmanager
def _load_error(base_model: str):
    try:
        yield
    except OSError as exc:  # transformers' way of saying "not found here or on the hub"
        raise RelevelError(f"cannot load base model {base_model!r}: {exc}. Offline, use "
                           f"'{OFFLINE_BASE}' or a local model folder.") from None


def early_stopping_arguments(output_dir: str, config, steps_per_epoch: int, metric: str, greater_is_better: bool,
                             min_eval_delay: int = 0, **overrides) -> TrainingArguments:
    """Trainer arguments shared by our fine-tuning backends: evaluate `evaluations_per_epoch` times an epoch
    after the warm-up, keep the best checkpoint by `metric`, CPU-friendly logging; `config` carries epochs,
    learning_rate, batch_size, warmup_ratio, weight_decay, evaluations_per_epoch and seed. No evaluation
    (so no early stop) before the warm-up is over, nor before `min_eval_delay` steps."""
    eval_steps = max(1, steps_per_epoch // config.evaluations_per_epoch)
    warmup_steps = math.ceil(config.warmup_ratio * steps_per_epoch * config.epochs)
    return TrainingArguments(**{
        "output_dir": output_dir, "num_train_epochs": config.epochs, "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.batch_size, "per_device_eval_batch_size": 128,
        "warmup_steps": warmup_steps, "weight_decay": config.weight_decay, "max_grad_norm": 1.0,
        "eval_strategy": "steps", "eval_steps": eval_steps, "eval_delay": max(warmup_steps, min_eval_delay),
        "save_strategy": "steps", "save_steps": eval_steps, "save_total_limit": 1, "save_only_model": True,
        "load_best_model_at_end": True, "metric_for_best_model": metric, "greater_is_better": greater_is_better,
        "logging_steps": max(1, eval_steps // 2), "report_to": [], "seed": config.seed, "use_cpu": True,
        "disable_tqdm": True, "dataloader_num_workers": 0, **overrides})


class ProgressBar(TrainerCallback):
    """One bar over training steps with the latest loss and tune metric, instead of the Trainer's printed
    log dictionaries."""

    def __init__(self, description: str, metric: str, enabled: bool = True):
        self.description, self.metric, self.enabled = description, metric, enabled
        self.bar: tqdm | None = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=self.description, unit="step", disable=not self.enabled,
                        leave=False)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, label in (("loss", "loss"), (f"eval_{self.metric}", self.metric)):
            if logs and key in logs:
                self.postfix[label] = f"{logs[key]:.4f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()
