"""Embedder quality vs training budget on QBQTC dev: which loss, layers, steps and learning rate reach the
real-only baseline (Spearman ≈ 0.52 after a full CoSENT epoch) within the embedder's 10-minute step budget.

    .venv/bin/python benchmarks/embedder_budget.py --run RUN [--synthetic] --set loss=cosent --set steps=400 ...

RUN is a finished `relevel run` of QBQTC (configs/qbqtc.yaml): its prepared train / unlabeled records, dev
pairs, encoder store and (with --synthetic) kept synthetic queries are reused, so only the embedder trains.
`--set FIELD=VALUE` overrides the run's `embedder:` settings (YAML values). One JSON line per measurement
is appended to --log: wall seconds of the stored-state encoding and of training, and the dev metrics.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from relevel.config import load_config
from relevel.data.schema import LabeledPair
from relevel.eval.evaluator import GradedEvaluator
from relevel.models.embedder import build_embedder, train_embedder
from relevel.pipeline.filter import kept_pairs
from relevel.pipeline.io import read_records
from relevel.pipeline.train_embedder import graded_pairs

REPORTED = ("ndcg@5", "ndcg@10", "recall@10", "spearman", "ap@level>=1", "ap@level>=2", "ndcg@10@dim64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--synthetic", action="store_true", help="add the run's kept synthetic queries")
    parser.add_argument("--synthetic-levels", type=int, nargs="+", metavar="LEVEL",
                        help="with --synthetic: only the kept queries of these levels")
    parser.add_argument("--links-per-level", type=int, metavar="N",
                        help="add up to N of stage 1's re-annotated links per level (real queries on other "
                             "documents, labelled by the judge), drawn at random")
    parser.add_argument("--merge-base", type=float, nargs="+", metavar="SHARE",
                        help="also evaluate the fine-tuned weights interpolated with the base model's at these "
                             "shares of the fine-tuned ones (WiSE-FT; 1: the fine-tuned model alone)")
    parser.add_argument("--log", type=Path, default=Path("benchmarks/embedder_budget.jsonl"))
    args = parser.parse_args()

    run_config = load_config(args.run / "config.yaml")
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = run_config.embedder.model_copy(update=overrides)
    pairs = [LabeledPair(**r) for r in read_records(args.run / "holdout" / "train")]
    if args.synthetic:
        # each round's filter keeps everything kept so far: the last round's holds every synthetic query
        last = max(args.run.glob("filter-r*"), key=lambda folder: int(folder.name.removeprefix("filter-r")))
        pairs += [p for p in kept_pairs(last / "kept")
                  if args.synthetic_levels is None or p.level in args.synthetic_levels]
    if args.links_per_level:
        links = [LabeledPair(**r) for r in read_records(args.run / "d2q" / "pairs") if r["source"] != "real"]
        rng = np.random.default_rng(0)
        for level in sorted({p.level for p in links}):
            at_level = [p for p in links if p.level == level]
            pairs += [at_level[i] for i in sorted(rng.permutation(len(at_level))[:args.links_per_level])]
    corpus = sorted({p.doc for p in pairs} | {r["text"] for r in read_records(args.run / "holdout" / "unlabeled")})

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        fit = train_embedder(config, run_config.scale, pairs, corpus, Path(scratch) / "model", Path(scratch),
                             args.run / "cache" / "encodings", progress=True)
        wall = time.perf_counter() - start
        from relevel.models.embedder import load_embedder

        model = load_embedder(Path(scratch) / "model")
    evaluator = GradedEvaluator(graded_pairs(args.run / "ingest-dev" / "records"),
                                run_config.scale.relevance_thresholds, config.matryoshka_dims,
                                prompts={"query": config.query_prompt, "document": config.document_prompt})
    trained = {name: value.clone() for name, value in model.state_dict().items()}
    base = build_embedder(config).state_dict()
    for share in args.merge_base or [1.0]:
        # WiSE-FT: the fine-tuned weights interpolated with the base's (share 1: the fine-tuned model)
        model.load_state_dict({name: share * value + (1 - share) * base[name] if value.is_floating_point()
                               else value for name, value in trained.items()})
        metrics = evaluator(model)
        row = {"date": time.strftime("%Y-%m-%d"), "overrides": overrides,
               "synthetic": args.synthetic and (args.synthetic_levels or "all"),
               "links_per_level": args.links_per_level, "fine_tuned_share": share,
               "pairs": len(pairs), "wall_s": round(wall, 1), "train_s": round(fit["train_seconds"], 1),
               "steps": fit["steps"], **{k: round(metrics[k], 4) for k in REPORTED if k in metrics}}
        print(json.dumps(row, ensure_ascii=False))
        with args.log.open("a") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
