"""A frozen transformer encoder whose outputs are computed once per unique text and kept, in memory and,
given a store folder, on disk for the other steps of the run (judge, held-out judge, generator and their
predictions all read the same documents: encoding dominates their cost on CPU)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel

from relevel.models.hf import load_pretrained


class FrozenEncoder:
    """Mean-pooled states at a few depths plus last-layer token states, per unique text, kept in memory
    (the judge's features read both; the generator's decoder attends to the token states)."""

    def __init__(self, base_model: str, max_length: int, query_prefix: str = "", document_prefix: str = "",
                 num_layers: int | None = None, store: Path | None = None, special_tokens: bool = False):
        """special_tokens: keep [CLS]/[SEP] in the token states (a model stacked on them needs every position)."""
        self.max_length, self.prefixes = max_length, {"query": query_prefix, "document": document_prefix}
        self.special_tokens = special_tokens
        self.tokenizer, self.model = load_pretrained(base_model, AutoModel, num_layers)
        self.model.eval()
        depth = self.model.config.num_hidden_layers
        self.layers = sorted({max(1, depth // 2), max(1, 3 * depth // 4), depth})  # similarity at 3 depths
        # keyed by the exact input (prefix + text): a judge and a generator with the same document prefix
        # and length share their document encodings
        self.cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.store = None
        if store is not None:  # one folder per encoder setting: a different model or length never mixes in
            setting = json.dumps([base_model, num_layers, max_length, self.layers, *(["special"] * special_tokens)])
            self.store = Path(store) / hashlib.sha256(setting.encode()).hexdigest()[:16]
            self.cache.update(read_shards(self.store))

    def encode(self, texts: Sequence[str], kind: str, progress: bool = False, batch_size: int = 64) -> None:
        prefix = self.prefixes[kind]
        todo = sorted({prefix + t for t in texts if prefix + t not in self.cache}, key=len)  # length-sorted
        new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        desc = "encoding queries" if kind == "query" else "encoding documents"
        with tqdm(total=len(todo), desc=desc, unit="text", disable=not progress or not todo,
                  leave=False) as bar, torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                encoded = self.tokenizer(batch, padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt")
                states = self.model(**encoded, output_hidden_states=True).hidden_states
                mask = encoded["attention_mask"].unsqueeze(-1).float()
                means = torch.stack([(states[i] * mask).sum(1) / mask.sum(1) for i in self.layers], dim=1)
                # rounded as the store keeps them, so a stored and a fresh encoding give the same features
                means = torch.nn.functional.normalize(means, dim=-1).numpy().astype(np.float16).astype(np.float32)
                last = states[-1].numpy().astype(np.float16)
                for row, text in enumerate(batch):
                    length = int(encoded["attention_mask"][row].sum())
                    tokens = slice(0, length) if self.special_tokens else slice(1, max(2, length - 1))
                    new[text] = means[row], last[row, tokens]
                bar.update(len(batch))
        self.cache.update(new)
        if self.store is not None and new:
            write_shard(self.store, new)

    def get(self, kind: str, text: str) -> tuple[np.ndarray, np.ndarray]:
        return self.cache[self.prefixes[kind] + text]


def write_shard(folder: Path, entries: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """One file per call that found new texts; written under a temporary name and renamed, so a killed
    run leaves whole shards only."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(entries)
    tokens = [entries[k][1] for k in keys]
    path = folder / f"shard-{len(list(folder.glob('shard-*.npz'))):05d}-{os.getpid()}.npz"
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, keys=np.array(json.dumps(keys, ensure_ascii=False)),
                 means=np.stack([entries[k][0] for k in keys]).astype(np.float16),
                 tokens=np.concatenate(tokens), offsets=np.cumsum([0] + [len(t) for t in tokens]))
    os.replace(tmp, path)


def read_shards(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in sorted(folder.glob("shard-*.npz")):
        with np.load(path) as shard:
            keys, means, tokens, offsets = (json.loads(str(shard["keys"])), shard["means"].astype(np.float32),
                                            shard["tokens"], shard["offsets"])
        for i, text in enumerate(keys):
            out[text] = means[i], tokens[offsets[i]:offsets[i + 1]]
    return out
