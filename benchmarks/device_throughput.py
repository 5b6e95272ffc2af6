"""Model throughput of the pipeline's three kinds of model work, on this CPU or a GPU, for the 1M projection.

    python benchmarks/device_throughput.py [--device cuda] [--seconds 10]

Runs with torch and transformers alone (no relevel import), so it also runs on a bare GPU machine. The
models have the shapes the QBQTC run uses, with random weights (throughput does not depend on them):
- encode: multilingual-e5-small (12 layers, 384 wide, 250k vocabulary) reading single texts with QBQTC's
  token lengths: what the features judge and the generator's encoder pay per unique query or document;
- cross: the same model reading (query, title) pairs: the cross-encoder judge's cost per pair;
- decode: the generator's 2-layer pointer decoder (cross-attending to 64 document tokens) sampling
  12-token queries, with no key/value cache (as relevel's sampler does): cost per generated query.
Lengths are drawn from log-normals matched to QBQTC's measured means (query 12, title 22, pair 29 tokens).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from transformers import BertConfig, BertLMHeadModel, BertModel

E5_SMALL = dict(vocab_size=250037, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
MEAN_TOKENS = {"query": 12, "title": 22, "pair": 29}


def lengths(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    sigma = 0.35
    mu = np.log(MEAN_TOKENS[kind]) - sigma**2 / 2
    return np.clip(np.round(rng.lognormal(mu, sigma, n)), 4, 128).astype(int)


def timed(run_batch, items: int, seconds: float, sync) -> float:
    """Items per second: batches repeated until `seconds` have passed, after two warm-ups."""
    for _ in range(2):
        run_batch()
    sync()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run_batch()
        done += items
    sync()
    return done / (time.perf_counter() - start)


def encoder_rate(kind: str, batch: int, device: str, dtype, seconds: float, rng, sync) -> float:
    model = BertModel(BertConfig(**E5_SMALL)).to(device, dtype).eval()
    sizes = np.sort(lengths(kind, batch, rng))  # length-sorted, as relevel batches them
    ids = torch.randint(5, E5_SMALL["vocab_size"], (batch, int(sizes.max())), device=device)
    mask = (torch.arange(ids.shape[1], device=device)[None, :] < torch.tensor(sizes, device=device)[:, None])

    @torch.inference_mode()
    def run_batch():
        for start in range(0, batch, 256 if device == "cuda" else 32):  # sub-batches trim padding
            part = slice(start, start + (256 if device == "cuda" else 32))
            width = int(sizes[part].max())
            out = model(input_ids=ids[part, :width], attention_mask=mask[part, :width].long()).last_hidden_state
            (out * mask[part, :width, None]).sum(1)
    return timed(run_batch, batch, seconds, sync)


def decode_rate(batch: int, device: str, dtype, seconds: float, sync, query_tokens: int = 12,
                document_tokens: int = 64, vocab: int = 20000) -> float:
    config = BertConfig(**{**E5_SMALL, "vocab_size": vocab, "num_hidden_layers": 2}, is_decoder=True,
                        add_cross_attention=True)
    model = BertLMHeadModel(config).to(device, dtype).eval()
    memory = torch.randn(batch, document_tokens, 384, device=device, dtype=dtype)

    @torch.inference_mode()
    def run_batch():
        prefix = torch.full((batch, 1), 2, device=device)
        for _ in range(query_tokens):
            logits = model(input_ids=prefix, encoder_hidden_states=memory).logits[:, -1].float()
            nxt = torch.multinomial(torch.softmax(logits, -1), 1)
            prefix = torch.cat([prefix, nxt], dim=1)
    return timed(run_batch, batch, seconds, sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    batch = 4096 if device == "cuda" else 256
    rates = {
        "encode query texts/s": encoder_rate("query", batch, device, dtype, args.seconds, rng, sync),
        "encode title texts/s": encoder_rate("title", batch, device, dtype, args.seconds, rng, sync),
        "cross-encoder pairs/s": encoder_rate("pair", batch, device, dtype, args.seconds, rng, sync),
        "decode queries/s": decode_rate(1024 if device == "cuda" else 64, device, dtype, args.seconds, sync),
    }
    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()}" \
        f", {torch.get_num_threads()} threads"
    print(json.dumps({"device": name, "dtype": str(dtype), "torch": torch.__version__,
                      **{k: round(v, 1) for k, v in rates.items()}}, indent=2))


if __name__ == "__main__":
    main()
