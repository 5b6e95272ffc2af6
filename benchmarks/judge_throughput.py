"""Judge inference throughput on QBQTC dev pairs against the CPU's FLOP bound, with peak RSS.

    .venv/bin/python benchmarks/judge_throughput.py [--layers 12 6] [--threads 2] [--pairs 1024] [--int8]
                                                    [--compile] [--onnx] [--features] [--judge RUN/judge/model]

The bound: measured fp32 matmul GFLOP/s × the model's FLOPs per pair (dense layers plus attention, on
the real unpadded token counts). Throughput does not depend on the weights, so an untrained
classification head on the offline base model is measured. `--features` also measures the pipeline's
judge (embedding-features): its model work is one encoder pass per unique query and title, so its bound
counts those passes; its pair features are CPU work outside the bound, measured with it. `--judge` takes a
trained embedding-features judge (a QBQTC run's `judge/model`) and scores all dev pairs with its encoder in
fp32 and in int8, so a speed-up is weighed against what it costs in macro-F1. `--compile` measures the
cross-encoder under `torch.compile` and `--onnx` under ONNX Runtime (exported as relevel's frozen encoder
is, and with `--features` the features judge with `runtime.encoder: onnxruntime`); their first pass over
the pairs, which compiles or warms up for every new shape, is reported apart from a second, steady one.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from relevel.data.scale import Level, LevelScale
from relevel.eval.classification import classification_metrics
from relevel.models.encoder import export_onnx, onnx_session, use_runtime
from relevel.models.judge import create_judge, load_judge
from relevel.models.judge.config import JudgeConfig
from relevel.models.judge.features import encoder_for, pair_features

QBQTC_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qbqtc" / "dev.json"


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def flops_per_pair(config, lengths: np.ndarray) -> float:
    """Forward FLOPs averaged over pairs: per token 2·(4H² + 2·H·FF) per layer, plus 4·L·H for attention."""
    hidden, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * hidden**2 + 2 * hidden * ff) * lengths
    attention = 4 * lengths**2 * hidden
    return float(np.mean((dense + attention) * layers))


WEIGHTS_SHOWN = {"fp32": "fp32", "int8": "int8", "compiled": "fp32, torch.compile", "onnx": "fp32, ONNX Runtime"}


def measure(layers: int, pairs: list[dict], batch_size: int, sort: bool, weights: str = "fp32") -> dict:
    scale = LevelScale(levels=[Level(value=v, name=str(v)) for v in range(3)])
    judge = create_judge(scale, JudgeConfig(backend="cross-encoder", num_layers=layers, max_length=128))
    config = judge.model.config
    queries, docs = [p["query"] for p in pairs], [p["title"] for p in pairs]
    first_pass, reference = None, None
    if weights != "fp32":  # what the unchanged model says, to show how far each variant's logits move
        reference = judge.logits(queries, docs, batch_size)
    if weights == "int8":
        judge.model = int8_linears(judge.model)
    elif weights in ("compiled", "onnx"):
        judge.model = (torch.compile(judge.model, dynamic=True) if weights == "compiled"
                       else OnnxClassifier(judge.model, judge.tokenizer))
        start = time.perf_counter()
        judge.logits(queries, docs, batch_size)  # every batch shape once: compiles or warms up
        first_pass = len(pairs) / (time.perf_counter() - start)
    encoded = judge.tokenizer(queries, docs, truncation=True, max_length=128)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded])
    judge.logits(queries[:batch_size], docs[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    if sort:
        judge.logits(queries, docs, batch_size)
    else:  # the same batches in file order, to show what length-sorting saves
        for i in range(0, len(queries), batch_size):
            judge.batch_logits(queries[i:i + batch_size], docs[i:i + batch_size])
    seconds = time.perf_counter() - start
    drift = None if reference is None else float(np.abs(judge.logits(queries, docs, batch_size) - reference).max())
    return {"layers": layers, "sorted": sort, "weights": weights, "pairs_per_s": len(pairs) / seconds,
            "max_logit_change": drift,
            "first_pass_pairs_per_s": first_pass, "gflop_per_pair": flops_per_pair(config, lengths) / 1e9,
            "mean_tokens": float(lengths.mean())}


class OnnxClassifier:
    """The cross-encoder's ONNX graph run by ONNX Runtime, called like the transformers model it replaces."""

    def __init__(self, model: torch.nn.Module, tokenizer):
        # two pairs of different lengths, so the traced graph keeps the padding mask
        example = tokenizer(["查询", "更长一点的查询"], ["标题", "标题"], padding=True, return_tensors="pt")
        example = {name: example[name] for name in ("input_ids", "attention_mask")}  # e5's tokenizer gives these
        self.session = onnx_session(export_onnx(_Logits(model), example))

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feeds)[0]))


class _Logits(torch.nn.Module):
    """The classifier's logits alone: what the exported graph returns."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def measure_features(pairs: list[dict], batch_size: int, runtime: str = "torch") -> dict:
    """The embedding-features judge's model work on these pairs: encode each unique text once, then features."""
    config = JudgeConfig(max_length=128)
    use_runtime(runtime)
    encoder = encoder_for(config, None)
    queries, docs = [p["query"] for p in pairs], [p["title"] for p in pairs]
    texts = sorted({config.query_prefix + q for q in queries}) + sorted({config.document_prefix + d for d in docs})
    lengths = np.array([len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=128)["input_ids"]])
    encoder.encode(queries[:batch_size], "query", batch_size=batch_size)  # warm-up, then a cold cache
    encoder.cache.clear()
    start = time.perf_counter()
    encoder.encode(queries, "query", batch_size=batch_size)
    encoder.encode(docs, "document", batch_size=batch_size)
    encoded = time.perf_counter()
    pair_features(encoder, queries, docs)
    seconds = time.perf_counter() - start
    return {"layers": encoder.model.config.num_hidden_layers, "sorted": True,
            "weights": "onnx" if runtime == "onnxruntime" else "fp32",
            "backend": "embedding-features", "pairs_per_s": len(pairs) / seconds,
            "encoding_share": (encoded - start) / seconds, "texts": len(texts),
            "gflop_per_pair": flops_per_pair(encoder.model.config, lengths) * len(texts) / len(pairs) / 1e9,
            "mean_tokens": float(lengths.mean())}


def int8_linears(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every Linear: int8 weights, activations quantised per batch."""
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def judge_accuracy(path: Path, pairs: list[dict], batch_size: int) -> list[dict]:
    """A trained embedding-features judge on these pairs, its encoder in fp32 then in int8 (a cold cache)."""
    judge = load_judge(path)
    queries, docs = [p["query"] for p in pairs], [p["title"] for p in pairs]
    labels = np.array([int(p["label"]) for p in pairs])
    rows = []
    for int8 in (False, True):
        if int8:
            judge.encoder.model = int8_linears(judge.encoder.model)
        judge.encoder.cache.clear()
        start = time.perf_counter()
        predicted = judge.predict(queries, docs, batch_size)
        seconds = time.perf_counter() - start
        metrics = classification_metrics(labels, predicted.levels, judge.scale)
        rows.append({"int8": int8, "pairs_per_s": len(pairs) / seconds, "macro_f1": metrics["macro_f1"],
                     "accuracy": metrics["accuracy"],
                     "recalls": [info["recall"] for info in metrics["per_level"].values()]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[12, 6])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--int8", action="store_true", help="Also measure int8 dynamic quantisation (sorted).")
    parser.add_argument("--compile", action="store_true", help="Also measure torch.compile (sorted).")
    parser.add_argument("--onnx", action="store_true", help="Also measure ONNX Runtime (sorted).")
    parser.add_argument("--features", action="store_true", help="Also measure the embedding-features judge.")
    parser.add_argument("--judge", type=Path, help="A trained embedding-features judge: dev macro-F1 and "
                        "pairs/s with its encoder in fp32 and int8 (all dev pairs).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = [json.loads(line) for line in QBQTC_DEV.open(encoding="utf-8")][:args.pairs]
    gflops = matmul_gflops()
    rows = [measure(layers, pairs, args.batch_size, sort) for layers in args.layers for sort in (True, False)]
    if args.int8:
        rows += [measure(layers, pairs, args.batch_size, True, "int8") for layers in args.layers]
    if args.compile:
        rows += [measure(layers, pairs, args.batch_size, True, "compiled") for layers in args.layers]
    if args.onnx:
        rows += [measure(layers, pairs, args.batch_size, True, "onnx") for layers in args.layers]
    if args.features:
        rows.append(measure_features(pairs, args.batch_size))
        if args.onnx:
            rows.append(measure_features(pairs, args.batch_size, "onnxruntime"))
    print(f"{date.today()} · {platform.processor() or platform.machine()} · {args.threads} threads · "
          f"torch {torch.__version__} · matmul {gflops:.1f} GFLOP/s · {len(pairs)} QBQTC dev pairs, batch "
          f"{args.batch_size}\n")
    print("| judge | layers | length-sorted | weights | pairs/s | GFLOP/pair | fp32 FLOP bound pairs/s | "
          "share of bound | max logit change |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        bound = gflops / row["gflop_per_pair"]
        print(f"| {row.get('backend', 'cross-encoder')} | {row['layers']} | {'yes' if row['sorted'] else 'no'} | "
              f"{WEIGHTS_SHOWN[row['weights']]} | {row['pairs_per_s']:.0f} | "
              f"{row['gflop_per_pair']:.2f} | {bound:.0f} | {100 * row['pairs_per_s'] / bound:.0f}% | "
              f"{'' if row.get('max_logit_change') is None else format(row['max_logit_change'], '.1e')} |")
    for row in rows:
        if row.get("first_pass_pairs_per_s"):
            print(f"\n{WEIGHTS_SHOWN[row['weights']]}, {row['layers']} layers: first pass (compiling or warming "
                  f"up per shape) {row['first_pass_pairs_per_s']:.0f} pairs/s")
        if "texts" in row:
            print(f"\nembedding-features: {row['texts']} unique texts for {len(pairs)} pairs (mean "
                  f"{row['mean_tokens']:.1f} tokens), encoding {100 * row['encoding_share']:.0f}% of its time")
    if args.judge:
        every_pair = [json.loads(line) for line in QBQTC_DEV.open(encoding="utf-8")]
        print(f"\n{args.judge} on all {len(every_pair)} dev pairs (cold encoding cache):\n")
        print("| encoder weights | pairs/s | accuracy | macro-F1 | recall per level |")
        print("|---|---|---|---|---|")
        for row in judge_accuracy(args.judge, every_pair, args.batch_size):
            print(f"| {'int8' if row['int8'] else 'fp32'} | {row['pairs_per_s']:.0f} | {row['accuracy']:.4f} | "
                  f"{row['macro_f1']:.4f} | {' / '.join(f'{r:.3f}' for r in row['recalls'])} |")
    print(f"\nmean tokens per pair {rows[0]['mean_tokens']:.1f}; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
