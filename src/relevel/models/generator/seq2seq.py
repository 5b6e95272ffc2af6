"""Seq2seq generator (the CPU default): the frozen base encoder reads each document once; a small decoder,
warm-started from the encoder's top layers (cross-attention copied from self-attention), writes the query.
The decoder writes from its vocabulary or points at the document's pieces (`PointerGeneratorDecoder`); the
target level is its first token, the token type of every position and a shift of its copy gate, so one model
serves every level.

Why this shape on 2 CPU cores: encoding is paid once per document (shared with nothing else to train), the
decoder is 2 layers, and its output layer covers only the pieces of the base vocabulary that the training
texts use (of 250k, a few tens of thousands): the full softmax would cost more than the rest of the model.
"""

from __future__ import annotations

import inspect
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    BertConfig,
    BertLMHeadModel,
    DynamicCache,
    EarlyStoppingCallback,
    EncoderDecoderCache,
    PrinterCallback,
    Trainer,
)

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.encoder import FrozenEncoder
from relevel.models.generator import GENERATOR_FILE
from relevel.models.generator.base import QueryGenerator
from relevel.models.generator.config import GeneratorConfig
from relevel.models.hf import ProgressBar, early_stopping_arguments

VOCAB_FILE = "pieces.npy"
# transformers 5.x renamed the decoding cache argument `past_key_values` to `cache` (the old name warns)
CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(BertLMHeadModel.forward).parameters else "past_key_values"


class PieceVocabulary:
    """The base tokenizer's pieces that the training texts use, then one token per level."""

    def __init__(self, pieces: np.ndarray, full_size: int, unk_id: int, num_levels: int):
        self.pieces = np.asarray(pieces, dtype=np.int64)  # local id -> base id
        self.local = np.full(full_size, int(np.flatnonzero(self.pieces == unk_id)[0]), dtype=np.int64)
        self.local[self.pieces] = np.arange(len(self.pieces))
        self.num_levels = num_levels

    @classmethod
    def build(cls, tokenizer, texts: Sequence[str], num_levels: int) -> PieceVocabulary:
        used = {i for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in ids}
        specials = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
        return cls(np.array(sorted(used | specials)), len(tokenizer), tokenizer.unk_token_id, num_levels)

    @property
    def size(self) -> int:
        return len(self.pieces) + self.num_levels

    def level_token(self, level: int) -> int:
        return len(self.pieces) + level

    def to_local(self, ids: Sequence[int]) -> list[int]:
        return self.local[np.asarray(ids, dtype=np.int64)].tolist()

    def to_base(self, ids: Sequence[int]) -> list[int]:
        ids = np.asarray(ids, dtype=np.int64)
        return self.pieces[ids[ids < len(self.pieces)]].tolist()


class PointerGeneratorDecoder(BertLMHeadModel):
    """A BERT decoder that writes each piece from its vocabulary or copies one of the document's (a
    pointer-generator, See et al. 2017): p(w) = (1 − c)·p_vocab(w) + c·Σ_{i: x_i = w} a_i, where a attends from
    the decoder's state over the document's token states and c is a learned copy gate. The pointer is what
    keeps copied pieces in the document's order (a bag-of-pieces bonus wrote shuffled titles), helped by a
    learned bonus for the piece right after the one just written: a span is then one decision, not one
    that a few hundred CPU steps have to learn position by position. The target
    level conditions everything: it is the token type of every position and shifts the copy gate (queries at
    high levels copy the document, at level 0 they avoid it; a per-level scalar learns that at once)."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.pointer_query = torch.nn.Linear(hidden, hidden)
        self.pointer_key = torch.nn.Linear(hidden, hidden)
        self.copy_gate = torch.nn.Linear(hidden, 1)
        self.level_copy_bias = torch.nn.Parameter(torch.zeros(config.num_levels))
        # starts at a prior that continuing a span is likely (at ~lr per step, from 0 it would not move)
        self.continuation_bonus = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                document_ids=None, levels=None, labels=None, **kwargs):
        kwargs["token_type_ids"] = levels[:, None].expand_as(input_ids)
        kwargs.pop("output_hidden_states", None)
        # the decoding cache passes through in kwargs under whichever name this transformers version uses
        # (`past_key_values`, or `cache` from 5.x): naming one here would set both
        output = super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                 encoder_hidden_states=encoder_hidden_states,
                                 encoder_attention_mask=encoder_attention_mask, output_hidden_states=True, **kwargs)
        state = output.hidden_states[-1]
        scores = self.pointer_query(state) @ self.pointer_key(encoder_hidden_states).transpose(1, 2)
        scores = scores / math.sqrt(state.shape[-1])
        previous = torch.nn.functional.pad(document_ids[:, :-1], (1, 0), value=self.config.pad_token_id)
        scores = scores + self.continuation_bonus * (input_ids[:, :, None] == previous[:, None, :])
        copyable = (document_ids != self.config.pad_token_id)[:, None, :]  # specials, prompt and padding: no
        attention = scores.masked_fill(~copyable, -1e4).softmax(-1) * copyable
        copied = torch.zeros_like(output.logits).scatter_add_(
            2, document_ids[:, None, :].expand(-1, state.shape[1], -1), attention)
        gate = torch.sigmoid(self.copy_gate(state) + self.level_copy_bias[levels][:, None, None])
        probs = (1 - gate) * output.logits.softmax(-1) + gate * copied
        # log-probabilities as logits: softmax gives the mixture back, so loss, sampling and top-p work as is
        output.logits = probs.clamp_min(1e-9).log()
        output.hidden_states = None
        if labels is not None:
            output.loss = self.loss_function(logits=output.logits, labels=labels, vocab_size=self.config.vocab_size)
        return output


def warm_started_decoder(encoder, vocab: PieceVocabulary, layers: int, special_ids: dict[str, int]
                         ) -> PointerGeneratorDecoder:
    """A BERT decoder whose embeddings and layers copy the encoder's (the top `layers`; cross-attention copies
    self-attention), with the vocabulary cut to `vocab`; only the output transform starts fresh."""
    base = encoder.config
    if layers > base.num_hidden_layers:
        raise RelevelError(f"generator.decoder_layers={layers}, but the base has {base.num_hidden_layers} layers")
    config = BertConfig(
        vocab_size=vocab.size, hidden_size=base.hidden_size, num_hidden_layers=layers,
        num_attention_heads=base.num_attention_heads, intermediate_size=base.intermediate_size,
        hidden_act=base.hidden_act, max_position_embeddings=base.max_position_embeddings,
        type_vocab_size=vocab.num_levels, layer_norm_eps=base.layer_norm_eps,
        is_decoder=True, add_cross_attention=True, tie_word_embeddings=True, num_levels=vocab.num_levels,
        **special_ids)
    decoder = PointerGeneratorDecoder(config)
    skip = base.num_hidden_layers - layers
    state = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("embeddings.word_embeddings"):
            levels = value.mean(0) + 0.02 * torch.randn(vocab.num_levels, value.shape[1])
            value = torch.cat([value[torch.as_tensor(vocab.pieces)], levels])
        elif key.startswith("embeddings.token_type_embeddings"):  # one type per level, from the base's first
            value = value[:1].repeat(vocab.num_levels, 1) + 0.02 * torch.randn(vocab.num_levels, value.shape[1])
        elif key.startswith("encoder.layer."):
            index = int(key.split(".")[2])
            if index < skip:
                continue
            key = key.replace(f"encoder.layer.{index}.", f"encoder.layer.{index - skip}.", 1)
            if ".attention." in key:  # cross-attention starts as a copy of self-attention: from step 0 the
                # query tokens attend to the document's tokens as the encoder attends among its own
                state[f"bert.{key.replace('.attention.', '.crossattention.')}"] = value.clone()
        elif not key.startswith("embeddings."):
            continue  # the pooler
        state[f"bert.{key}"] = value
    missing, unexpected = decoder.load_state_dict(state, strict=False)
    fresh = [k for k in missing
             if not k.startswith(("cls.", "pointer_", "copy_gate", "level_copy_bias", "continuation_bonus"))]
    if fresh or unexpected:
        raise RelevelError(f"base model {type(encoder).__name__} does not map onto a BERT decoder "
                           f"(missing {fresh[:3]}, unexpected {unexpected[:3]})")
    decoder.tie_weights()
    return decoder


class _Collator:
    """Pads query ids and the documents' cached token states (with their pieces) into one batch."""

    def __init__(self, doc_states: list[np.ndarray], doc_ids: list[list[int]], vocab: PieceVocabulary,
                 pad_id: int):
        self.doc_states, self.doc_ids, self.vocab, self.pad_id = doc_states, doc_ids, vocab, pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r["ids"])] = torch.as_tensor(r["ids"])
        mask = (ids != self.pad_id).long()
        states, state_mask, doc_ids = pad_documents([self.doc_states[r["doc"]] for r in rows],
                                                    [self.doc_ids[r["doc"]] for r in rows], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100),
                "encoder_hidden_states": states, "encoder_attention_mask": state_mask, "document_ids": doc_ids,
                "levels": ids[:, 0] - self.vocab.level_token(0)}


def pad_documents(states: Sequence[np.ndarray], ids: Sequence[Sequence[int]], pad_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token states, their mask and their pieces (pad where nothing may be copied), padded to one width."""
    width = max(len(s) for s in states)
    out = torch.zeros(len(states), width, states[0].shape[1])
    mask = torch.zeros(len(states), width, dtype=torch.long)
    pieces = torch.full((len(states), width), pad_id, dtype=torch.long)
    for i, (s, row) in enumerate(zip(states, ids)):
        out[i, :len(s)] = torch.from_numpy(s.astype(np.float32))
        mask[i, :len(s)] = 1
        pieces[i, :len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out, mask, pieces


def document_encoder(config: GeneratorConfig, store: Path | None) -> FrozenEncoder:
    return FrozenEncoder(config.base_model, config.max_document_tokens, document_prefix=config.document_prefix,
                         store=store)


class Seq2SeqGenerator(QueryGenerator):
    BACKEND = "seq2seq"

    def __init__(self, scale: LevelScale, config: GeneratorConfig, encoder: FrozenEncoder,
                 vocab: PieceVocabulary | None = None, decoder: PointerGeneratorDecoder | None = None):
        super().__init__(scale)
        self.config, self.encoder, self.vocab, self.decoder = config, encoder, vocab, decoder

    @classmethod
    def from_base(cls, scale: LevelScale, config: GeneratorConfig, encoder_store: Path | None = None
                  ) -> Seq2SeqGenerator:
        return cls(scale, config, document_encoder(config, encoder_store))

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    def _special_ids(self) -> dict[str, int]:
        local = self.vocab.to_local
        tok = self.tokenizer
        return {"pad_token_id": local([tok.pad_token_id])[0], "bos_token_id": local([tok.bos_token_id])[0],
                "eos_token_id": local([tok.eos_token_id])[0]}

    def _doc_ids(self, docs: Sequence[str]) -> list[list[int]]:
        """The local piece at each of a document's encoded positions (as the encoder store keeps them: no
        [CLS]/[SEP]); pad where copying makes no sense: the prompt's pieces and pieces outside the vocabulary."""
        prefix = self.config.document_prefix
        encoded = self.tokenizer([prefix + d for d in docs], truncation=True, return_offsets_mapping=True,
                                 max_length=self.config.max_document_tokens)
        pad, unk = self._special_ids()["pad_token_id"], self.vocab.to_local([self.tokenizer.unk_token_id])[0]
        out = []
        for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"]):
            inner = slice(1, max(2, len(ids) - 1))
            local = self.vocab.to_local(ids[inner])
            out.append([piece if end > len(prefix) and piece != unk else pad
                        for piece, (_, end) in zip(local, offsets[inner])])
        return out

    def _doc_states(self, docs: Sequence[str], progress: bool) -> list[np.ndarray]:
        self.encoder.encode(docs, "document", progress)
        return [self.encoder.get("document", d)[1] for d in docs]

    def _examples(self, pairs: Sequence[LabeledPair], doc_index: dict[str, int]) -> list[dict]:
        queries = self.tokenizer([p.query for p in pairs], add_special_tokens=False, truncation=True,
                                 max_length=self.config.max_query_tokens - 2)["input_ids"]
        eos = self._special_ids()["eos_token_id"]
        return [{"doc": doc_index[p.doc], "ids": [self.vocab.level_token(p.level), *self.vocab.to_local(q), eos]}
                for p, q in zip(pairs, queries)]

    def fit(self, train: Sequence[LabeledPair], tune: Sequence[LabeledPair], progress: bool = False,
            work_dir: Path | None = None, init_from: Path | None = None) -> dict:
        config = self.config
        if config.max_examples and len(train) > config.max_examples:
            keep = np.random.default_rng(config.seed).choice(len(train), config.max_examples, replace=False)
            train = [train[i] for i in sorted(keep)]
        if init_from is not None:  # warm start: the saved decoder and its vocabulary
            previous = Seq2SeqGenerator.load(init_from, encoder=self.encoder)
            self.vocab, self.decoder = previous.vocab, previous.decoder
        else:
            texts = [p.query for p in train] + sorted({p.doc for p in train})
            self.vocab = PieceVocabulary.build(self.tokenizer, texts, self.scale.num_levels)
            torch.manual_seed(config.seed)  # the fresh rows (levels, output transform): same seed, same model
            self.decoder = warm_started_decoder(self.encoder.model, self.vocab, config.decoder_layers,
                                                self._special_ids())
        docs = sorted({p.doc for p in [*train, *tune]})
        doc_index = {d: i for i, d in enumerate(docs)}
        collator = _Collator(self._doc_states(docs, progress), self._doc_ids(docs), self.vocab,
                             self._special_ids()["pad_token_id"])

        steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.decoder.train()
        # too few documents for a tune slice (a tiny retrain): the configured epochs, no early stopping
        no_tune = {} if tune else {"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False}
        with tempfile.TemporaryDirectory(dir=work_dir) as checkpoints:
            args = early_stopping_arguments(
                checkpoints, config, steps_per_epoch, metric="loss", greater_is_better=False,
                # no early stop inside the first epoch: at this learning rate the tune loss is noisy there,
                # and on small data (the demo) a bump at step 20 ended training for good
                min_eval_delay=steps_per_epoch, remove_unused_columns=False, train_sampling_strategy="random",
                **no_tune)
            trainer = Trainer(
                model=self.decoder, args=args, train_dataset=self._examples(train, doc_index),
                eval_dataset=self._examples(tune, doc_index) if tune else None, data_collator=collator,
                callbacks=[*([EarlyStoppingCallback(early_stopping_patience=config.patience)] if tune else []),
                           ProgressBar("training generator", "loss", progress)])
            trainer.remove_callback(PrinterCallback)
            result = trainer.train()
            history = [{"step": e["step"], "loss": e["eval_loss"]} for e in trainer.state.log_history
                       if "eval_loss" in e]
            best_step = trainer.state.best_global_step
        self.decoder.eval()
        return {"train_examples": len(train), "tune_examples": len(tune), "vocabulary": self.vocab.size,
                "documents": len(docs), "steps": result.global_step, "best_step": best_step,
                "train_seconds": result.metrics["train_runtime"], "train_loss": result.training_loss,
                "tune_history": history, "warm_start": init_from is not None,
                "copy_gate_shift": {level.name: round(float(w.detach()), 3)
                                    for level, w in zip(self.scale.levels, self.decoder.level_copy_bias)}}

    @torch.inference_mode()
    def generate(self, docs: Sequence[str], levels: Sequence[int], n: int, seed: int = 0,
                 progress: bool = False, batch_size: int = 32) -> list[list[str]]:
        if len(docs) != len(levels):
            raise ValueError(f"{len(docs)} documents but {len(levels)} levels")
        torch.manual_seed(seed)
        special = self._special_ids()
        states, doc_ids = self._doc_states(docs, progress), self._doc_ids(docs)
        out: list[list[str]] = []
        with tqdm(total=len(docs), desc="generating", unit="doc", disable=not progress, leave=False) as bar:
            for start in range(0, len(docs), batch_size):
                batch_states, mask, batch_ids = pad_documents(states[start:start + batch_size],
                                                              doc_ids[start:start + batch_size],
                                                              special["pad_token_id"])
                batch_levels = torch.tensor(levels[start:start + batch_size])
                first = (batch_levels + self.vocab.level_token(0))[:, None]
                sequences = self.decoder.generate(
                    input_ids=first, encoder_hidden_states=batch_states, encoder_attention_mask=mask,
                    document_ids=batch_ids, levels=batch_levels,
                    do_sample=True, temperature=self.config.temperature, top_p=self.config.top_p, top_k=0,
                    repetition_penalty=self.config.repetition_penalty,
                    max_new_tokens=self.config.max_query_tokens - 1, num_return_sequences=n,
                    # BertLMHeadModel's cross-attention needs an encoder-decoder cache (transformers 5)
                    **{CACHE_ARGUMENT: EncoderDecoderCache(DynamicCache(), DynamicCache())}, **special)
                texts = [self.tokenizer.decode(self.vocab.to_base(s[1:]), skip_special_tokens=True).strip()
                         for s in sequences.tolist()]
                for row in range(len(first)):
                    out.append(list(dict.fromkeys(t for t in texts[row * n:(row + 1) * n] if t)))
                bar.update(len(first))
        return out

    def save(self, path: Path) -> None:
        path = Path(path)
        self.decoder.save_pretrained(path / "decoder")
        np.save(path / VOCAB_FILE, self.vocab.pieces)
        (path / GENERATOR_FILE).write_text(json.dumps({
            "backend": self.BACKEND, "scale": self.scale.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"), "base_vocabulary": len(self.tokenizer),
        }, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, encoder_store: Path | None = None, encoder: FrozenEncoder | None = None
             ) -> Seq2SeqGenerator:
        path = Path(path)
        meta = json.loads((path / GENERATOR_FILE).read_text(encoding="utf-8"))
        config, scale = GeneratorConfig.model_validate(meta["config"]), LevelScale.model_validate(meta["scale"])
        encoder = encoder or document_encoder(config, encoder_store)
        tokenizer = encoder.tokenizer
        vocab = PieceVocabulary(np.load(path / VOCAB_FILE), len(tokenizer), tokenizer.unk_token_id, scale.num_levels)
        decoder = PointerGeneratorDecoder.from_pretrained(path / "decoder").eval()
        return cls(scale, config, encoder, vocab, decoder)
