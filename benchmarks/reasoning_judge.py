"""The reasoning-tuned judge with and without reasoning: training time, judging speed and agreement with the
human level on QBQTC, for the CPU smoke model (SmolLM2-135M-Instruct, LoRA) with the same model behind the
local llama.cpp server as the teacher. A GPU with a 7B teacher is the intended setting; this measures what
the reasoning costs, not what it is worth with a real model.

    .venv/bin/python benchmarks/reasoning_judge.py --train 40 --dev 40
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from llm_server import LlamaServer  # noqa: E402  (the tests' server helper)

QBQTC = REPO.parent / "shared" / "data" / "qbqtc"


def pairs(file: str, n: int):
    from relevel.data.schema import LabeledPair

    rows = [json.loads(line) for line in (QBQTC / file).read_text(encoding="utf-8").splitlines()[:n]]
    return [LabeledPair(id=f"{file}:{i}", query=r["query"], doc_id=f"d{i}", doc=r["title"], level=int(r["label"]))
            for i, r in enumerate(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--dev", type=int, default=40)
    args = parser.parse_args()
    from sklearn.metrics import f1_score

    from relevel.config import load_config
    from relevel.models.judge.config import JudgeConfig
    from relevel.models.judge.reasoning import ReasoningJudge
    from relevel.models.llm.config import LLMConfig

    scale = load_config(REPO / "configs" / "qbqtc.yaml").scale
    train, dev = pairs("train.json", args.train), pairs("dev.json", args.dev)
    work = Path(tempfile.mkdtemp(prefix="reasoning-judge-"))
    server = LlamaServer()
    try:
        teacher = LLMConfig(base_url=server.base_url, model="smollm2", cache_dir=work / "cache", max_tokens=96,
                            response_format="llama_cpp_schema", concurrency=2)
        for reasoning in (False, True):
            config = JudgeConfig(backend="reasoning-lm", llm=teacher if reasoning else None, reasoning=reasoning,
                                 epochs=1, batch_size=4, max_length=48, train_examples=len(train),
                                 calibration_pairs=8, max_reasoning_tokens=48)
            judge = ReasoningJudge(scale, config)
            start = time.monotonic()
            report = judge.fit(train[:-8], train[-8:], work_dir=work / str(reasoning))
            fit_s = time.monotonic() - start
            start = time.monotonic()
            levels = judge.predict([p.query for p in dev], [p.doc for p in dev]).levels
            judge_s = time.monotonic() - start
            truth = np.array([p.level for p in dev])
            print(json.dumps({"reasoning": reasoning, "train_pairs": report["train_pairs"],
                              "teacher_answers": report.get("llm", {}).get("answers"), "fit_s": round(fit_s, 1),
                              "dev_pairs": len(dev), "judge_s": round(judge_s, 1),
                              "pairs_per_s": round(len(dev) / judge_s, 2),
                              "accuracy": round(float((levels == truth).mean()), 3),
                              "macro_f1": round(float(f1_score(truth, levels, average="macro")), 3),
                              "predicted_levels": np.bincount(levels, minlength=scale.num_levels).tolist()}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
