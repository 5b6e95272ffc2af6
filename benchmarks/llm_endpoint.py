"""LLM backends against a local OpenAI-compatible server (llama.cpp, SmolLM2-135M-Instruct, 2 CPU cores):
requests/s and parse failures of the LLM judge and the prompt-only generator on QBQTC dev, and the cache hit
rate when a killed run resumes.

    .venv/bin/python benchmarks/llm_endpoint.py --pairs 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from llm_server import FaultProxy, LlamaServer  # noqa: E402  (the tests' server helpers)

QBQTC = REPO.parent / "shared" / "data" / "qbqtc"
JUDGE = """
import json, sys
from relevel.config import load_config
from relevel.models.judge.llm import LLMJudge
from relevel.models.judge.config import JudgeConfig
from relevel.models.llm.config import LLMConfig
llm = LLMConfig.model_validate_json(sys.argv[1])
pairs = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
scale = load_config(sys.argv[3]).scale
judge = LLMJudge(scale, JudgeConfig(backend="llm", llm=llm))
judge.predict([p["query"] for p in pairs], [p["title"] for p in pairs], batch_size=len(pairs))
print(json.dumps(judge.usage()))
"""


def run_judge(llm, pairs_file: Path, config: Path, kill_after: int | None, proxy: FaultProxy) -> dict | None:
    process = subprocess.Popen([sys.executable, "-c", JUDGE, llm.model_dump_json(), str(pairs_file), str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if kill_after is not None:
        while proxy.requests < kill_after and process.poll() is None:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return None
    out, _ = process.communicate()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--documents", type=int, default=20)
    args = parser.parse_args()
    from relevel.config import load_config
    from relevel.data.schema import LabeledPair
    from relevel.models.generator.config import GeneratorConfig
    from relevel.models.generator.llm import PromptOnlyGenerator
    from relevel.models.llm.config import LLMConfig

    config = REPO / "configs" / "qbqtc.yaml"
    scale = load_config(config).scale
    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    rows = [json.loads(line) for line in (QBQTC / "dev.json").read_text(encoding="utf-8").splitlines()[:args.pairs]]
    pairs_file = work / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    server = LlamaServer()
    proxy = FaultProxy(server.base_url, [])
    try:
        llm = LLMConfig(base_url=proxy.base_url, model="smollm2", cache_dir=work / "cache", max_tokens=96,
                        response_format="llama_cpp_schema", concurrency=2)
        start = time.monotonic()
        run_judge(llm, pairs_file, config, kill_after=len(rows) // 2, proxy=proxy)
        first_part = time.monotonic() - start
        sent_before = proxy.requests
        start = time.monotonic()
        resumed = run_judge(llm, pairs_file, config, None, proxy)
        resume_wall = time.monotonic() - start
        repeated = sum(1 for n in proxy.seen.values() if n > 1)
        judge_rps = proxy.requests / (first_part + resume_wall)
        print(f"LLM judge, {len(rows)} QBQTC dev pairs: killed after {sent_before} requests, resumed: "
              f"{json.dumps(resumed)}")
        print(f"  requests/s {judge_rps:.2f}; cache hit rate on resume {resumed['cache_hit_rate']:.3f}; "
              f"prompts asked twice {repeated}; unparseable {resumed['failed']} / {len(rows)}")
        train = [LabeledPair(id=f"t{i}", query=r["query"], doc_id=f"d{i}", doc=r["title"], level=int(r["label"]))
                 for i, r in enumerate(json.loads(line) for line in
                                       (QBQTC / "train.json").read_text(encoding="utf-8").splitlines()[:300])]
        generator = PromptOnlyGenerator(scale, GeneratorConfig(backend="llm-prompt", llm=llm, temperature=0.8))
        generator.fit(train, [])
        documents = [r["title"] for r in rows[:args.documents]]
        start = time.monotonic()
        found = generator.generate(documents, [i % scale.num_levels for i in range(len(documents))], n=3, seed=0)
        wall = time.monotonic() - start
        usage = generator.usage()
        print(f"prompt-only synthesis, {len(documents)} requests × 3 queries: {usage['requests'] / wall:.2f} "
              f"requests/s, {sum(map(len, found))} queries, unparseable {usage['failed']} / {len(documents)}, "
              f"retries {usage['retries']}; e.g. {found[:3]}")
    finally:
        proxy.close()
        server.stop()


if __name__ == "__main__":
    main()
