"""A frozen transformer encoder whose outputs are computed once per unique text and kept, in memory and,
given a store folder, on disk for the other steps of the run (judge, held-out judge, generator and their
predictions all read the same documents: encoding dominates their cost on CPU).

The forward pass runs in torch or, exported once to ONNX, in ONNX Runtime: the same states (to the store's
last float16 step), about 1.5× faster on 2 CPU cores (benchmarks/RESULTS.md). Which one is a process-wide
choice, like torch's thread count: how to run, not what to compute, so it is set once per process
(`use_runtime`) rather than threaded through every judge, generator and embedder that owns an encoder."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel

from relevel.errors import RelevelError
from relevel.models.hf import load_pretrained

Runtime = Literal["torch", "onnxruntime"]
_runtime: Runtime = "torch"
ONNX_FILE = "encoder.onnx"


def use_runtime(runtime: Runtime) -> None:
    """Where every FrozenEncoder made after this call runs its forward pass."""
    global _runtime
    if runtime == "onnxruntime":
        missing = [name for name in ("onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:  # onnxscript: torch's ONNX exporter needs it
            raise RelevelError(f"runtime.encoder: onnxruntime needs the packages onnxruntime and onnxscript "
                               f"({', '.join(missing)} missing): pip install onnxruntime onnxscript")
    _runtime = runtime


def active_runtime() -> Runtime:
    return _runtime


def onnx_session(graph: str | bytes):
    """An ONNX Runtime session on the CPU with torch's thread count, from a graph file or its bytes."""
    # Its telemetry would write a device id and an event store under ~/.cache; a run writes nothing
    # outside its folder but the declared caches.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def export_onnx(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> bytes:
    """The module's forward pass as an ONNX graph (torch's own exporter; optimum would pin an older
    transformers), dynamic in batch size and length. `inputs`: example (batch, tokens) tensors in the order
    `forward` takes them, with padding, so that the traced graph keeps the attention mask."""
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens", max=512)
    # the exporter's notes (axis names, torchvision ops it skips) are not the user's concern
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, tuple(inputs.values()), dynamo=True, verbose=False,
                                    input_names=list(inputs),
                                    dynamic_shapes={name: {0: batch, 1: tokens} for name in inputs})
    return program.model_proto.SerializeToString()


class _HiddenStates(torch.nn.Module):
    """The model's hidden states as a plain tuple: what the ONNX graph returns."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(input_ids=input_ids, attention_mask=attention_mask,
                                output_hidden_states=True).hidden_states)


class OnnxHiddenStates:
    """The encoder's hidden states from its ONNX graph, run by ONNX Runtime on the CPU. Given a path, the
    graph is kept there and reused by later processes."""

    def __init__(self, model: torch.nn.Module, path: Path | None):
        if path is not None and path.exists():
            graph: str | bytes = str(path)
        else:
            example = {"input_ids": torch.full((2, 6), 5, dtype=torch.long),
                       "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])}
            graph = export_onnx(_HiddenStates(model), example)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # renamed whole: no half-written graph
                tmp.write_bytes(graph)
                os.replace(tmp, path)
        self.session = onnx_session(graph)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return tuple(torch.from_numpy(states) for states in self.session.run(None, feeds))


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
        self.runtime, self._onnx = _runtime, None

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.runtime == "torch":
            return self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
                              ).hidden_states
        if self._onnx is None:  # exported on first use, once per store (a run's later steps reuse the graph)
            self._onnx = OnnxHiddenStates(self.model, self.store / ONNX_FILE if self.store else None)
        return self._onnx(input_ids, attention_mask)

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
                states = self.hidden_states(encoded["input_ids"], encoded["attention_mask"])
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
