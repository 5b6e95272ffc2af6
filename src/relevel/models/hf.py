"""Shared transformers plumbing for the model backends."""

from __future__ import annotations

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.utils import logging


def quiet_transformers() -> None:
    """Our own progress bars and reports replace transformers' per-save bars and load reports."""
    logging.set_verbosity_error()
    logging.disable_progress_bar()


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
