"""LLM backends against a real OpenAI-compatible server (llama.cpp serving SmolLM2-135M-Instruct): protocol,
parsing, retries under injected faults, the response cache across a killed run, and the pipeline rows that
use them. The model's answers are weak; the tests check plumbing and counting, not wisdom."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, relevel_cli, write_lines
from llm_server import FaultProxy, llama_server_command
from relevel.data.scale import Level, LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.judge.config import JudgeConfig
from relevel.models.llm.client import ChatAnswer, ChatRequest, LLMClient, ParseError, TokenLogprobs
from relevel.models.llm.config import LLMConfig
from relevel.models.llm.parse import level_logits, level_of, queries_of
from relevel.models.llm.prompts import Prompts
from relevel.models.llm.serve import free_port
from relevel.pipeline.io import read_records
from relevel.pipeline.step import _jsonable

SCALE = LevelScale(levels=(Level(value=0, name="poor", description="does not meet the intent"),
                           Level(value=1, name="partial", description="related, key aspects missing"),
                           Level(value=2, name="high", description="fully meets the intent")))
PAIRS = [("红烧肉怎么做", "红烧肉的家常做法，一步步教你"), ("北京天气", "上海迪士尼门票价格"),
         ("苹果手机价格", "iPhone 15 最新报价"), ("周杰伦演唱会", "周杰伦 2024 巡回演唱会门票开售"),
         ("感冒吃什么药", "感冒了怎么办，常用药推荐"), ("足球比赛", "篮球比赛精彩集锦")]


def endpoint(base_url: str, cache: Path, **overrides) -> LLMConfig:
    return LLMConfig(**{"base_url": base_url, "model": "smollm2", "cache_dir": cache, "max_tokens": 96,
                        "response_format": "llama_cpp_schema", **overrides})


def judge_config(llm: LLMConfig) -> JudgeConfig:
    return JudgeConfig(backend="llm", llm=llm, calibration_pairs=4)


# --- no server needed -------------------------------------------------------------------------------------

def test_prompts_show_the_scale_and_an_override_changes_the_cache_key(tmp_path):
    system, user = Prompts().messages("judge", scale=SCALE, query="q1", document="d1")
    assert system["role"] == "system" and user["role"] == "user"
    assert "2 (high): fully meets the intent" in user["content"] and "q1" in user["content"]
    override = tmp_path / "prompts"
    override.mkdir()
    (override / "judge.jinja").write_text("Query {{ query }} / document {{ document }}: level?", encoding="utf-8")
    assert Prompts(override).messages("judge", scale=SCALE, query="q1", document="d1")[1]["content"] == \
        "Query q1 / document d1: level?"
    base = LLMConfig(base_url="http://127.0.0.1:1/v1", model="m")
    keyed = _jsonable(base)
    assert "prompts" in keyed and "base_url" not in keyed and "concurrency" not in keyed
    assert _jsonable(base.model_copy(update={"concurrency": 64, "base_url": "http://x/v1"})) == keyed
    assert _jsonable(base.model_copy(update={"prompts_dir": override})) != keyed
    (override / "judge.jinja").write_text("Changed {{ query }} {{ document }}", encoding="utf-8")
    assert _jsonable(base.model_copy(update={"prompts_dir": override}))["prompts"] != \
        _jsonable(base.model_copy(update={"prompts_dir": tmp_path}))["prompts"]
    assert "prompts" not in base.model_dump(mode="json")  # the run's config.yaml stays loadable


def test_parsers_read_json_or_one_level_and_reject_the_rest():
    def answer(text, tokens=None):
        return ChatAnswer(text, tokens)

    assert level_of(answer('```json\n{"reasoning": "same dish", "level": 2}\n```'), SCALE)[0] == 2
    assert level_of(answer('I think level: 1 because ...'), SCALE)[0] == 1
    for bad in ("", "no idea", '{"level": 7}', '{"level": "x"}', "level 1 or level: 2 ... level: 0"):
        with pytest.raises(ParseError):
            level_of(answer(bad), SCALE)
    assert queries_of(answer('{"queries": ["a", " a ", "", "b", "c"]}'), 2) == ["a", "b"]
    with pytest.raises(ParseError):
        queries_of(answer('{"queries": "a"}'), 2)
    # logprobs: the distribution at the token that writes the level's value
    text = '{"level": 1}'
    tokens = (TokenLogprobs('{"level": ', {'{"level": ': 0.0}),
              TokenLogprobs("1", {"1": np.log(0.7), "2": np.log(0.2), "0": np.log(0.1)}),
              TokenLogprobs("}", {"}": 0.0}))
    logits = level_logits(answer(text, tokens), SCALE)
    assert np.allclose(np.exp(logits), [0.1, 0.7, 0.2])
    assert level_logits(answer(text), SCALE) == [-20.0, 0.0, -20.0]  # no logprobs: the stated level only


# --- against the real server --------------------------------------------------------------------------------

def test_llm_judge_against_the_server_then_from_the_cache(llm_server, tmp_path):
    from relevel.models.judge.llm import LLMJudge

    llm = endpoint(llm_server.base_url, tmp_path / "cache")
    judge = LLMJudge(SCALE, judge_config(llm))
    queries, docs = zip(*PAIRS)
    prediction = judge.predict(list(queries), list(docs))
    assert prediction.probs.shape == (len(PAIRS), 3) and np.allclose(prediction.probs.sum(axis=1), 1)
    usage = judge.usage()
    assert usage["answers"] + usage["failed"] == len(PAIRS)
    assert usage["requests"] >= len(PAIRS) and usage["cache_hits"] == 0
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    judge.save(tmp_path / "judge")
    again = LLMJudge.load(tmp_path / "judge")
    assert np.allclose(again.predict(list(queries), list(docs)).probs, prediction.probs)
    assert again.usage()["requests"] == 0 and again.usage()["cache_hits"] == usage["lookups"]


def test_retries_count_every_injected_fault_and_lose_nothing(llm_server, tmp_path):
    proxy = FaultProxy(llm_server.base_url, ["429", "500", "timeout", "truncated", "empty"], delay_s=12.0)
    try:
        # short prompts and answers: real requests take about a second, well inside the 8 s timeout
        llm = endpoint(proxy.base_url, tmp_path / "cache", timeout_s=8.0, backoff_s=0.01, concurrency=1,
                       response_format="none", max_tokens=8)
        requests = [ChatRequest(({"role": "user", "content": f"Say hello to number {i}."},)) for i in range(4)]
        with LLMClient(llm) as client:
            # a parser that takes any non-empty answer: this test is about transport, not the model's JSON
            answers = client.complete(requests, lambda a: a.content if a.content.strip() else _raise())
        assert all(a for a in answers)
        assert dict(client.stats.retries) == {"429": 1, "5xx": 1, "timeout": 1, "malformed": 1, "parse": 1}
        assert client.stats.requests == proxy.requests == 4 + 5 and client.stats.failed == 0
    finally:
        proxy.close()


def _raise():
    raise ParseError("the answer is empty")


def test_endpoint_errors_are_one_clear_message(tmp_path):
    llm = endpoint(f"http://127.0.0.1:{free_port()}/v1", tmp_path / "cache", max_retries=1, backoff_s=0.01)
    with LLMClient(llm) as client, pytest.raises(RelevelError, match=r"still failing after 1 retries.*connection"):
        client.complete([ChatRequest(({"role": "user", "content": "hi"},))], lambda a: a.content)


KILLED_SCRIPT = """
import json, sys
from relevel.models.llm.client import ChatRequest, LLMClient
from relevel.models.llm.config import LLMConfig
llm = LLMConfig.model_validate_json(sys.argv[1])
requests = [ChatRequest(({"role": "user", "content": f"Give JSON {{\\"n\\": {i}}} and nothing else."},))
            for i in range(int(sys.argv[2]))]
with LLMClient(llm) as client:
    answers = client.complete(requests, lambda a: a.content)  # any answer: this is about the cache
print(json.dumps(client.stats.as_dict()))
"""


def test_a_killed_llm_run_resumes_from_the_cache_without_repeating_a_cached_request(llm_server, tmp_path):
    proxy = FaultProxy(llm_server.base_url, [])
    cache = tmp_path / "cache"
    llm = endpoint(proxy.base_url, cache, concurrency=1, max_tokens=24)
    count = 8
    try:
        first = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, llm.model_dump_json(), str(count)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while proxy.requests < 4 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        with sqlite3.connect(cache / "responses.sqlite") as db:
            cached = db.execute("SELECT count(*) FROM answers").fetchone()[0]
        assert 0 < cached < count
        seen_before = set(proxy.seen)
        second = subprocess.run([sys.executable, "-c", KILLED_SCRIPT, llm.model_dump_json(), str(count)],
                                capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr
        stats = json.loads(second.stdout.strip().splitlines()[-1])
        assert stats["cache_hits"] == cached and stats["requests"] == count - cached
        # only the request in flight when the run died (its answer never cached) may be asked again
        assert sum(proxy.seen[body] > 1 for body in seen_before) <= 1
        with sqlite3.connect(cache / "responses.sqlite") as db:
            assert db.execute("SELECT count(*) FROM answers").fetchone()[0] == count
    finally:
        proxy.close()


def test_prompt_only_generator_and_llm_order_check(llm_server, tmp_path):
    from relevel.models.generator.config import GeneratorConfig
    from relevel.models.generator.llm import PromptOnlyGenerator
    from relevel.models.llm.order import LLMOrderCheck

    llm = endpoint(llm_server.base_url, tmp_path / "cache")
    train = [LabeledPair(id=f"t{i}", query=q, doc_id=f"d{i}", doc=d, level=i % 3) for i, (q, d) in enumerate(PAIRS)]
    generator = PromptOnlyGenerator(SCALE, GeneratorConfig(backend="llm-prompt", llm=llm, few_shot_per_level=1))
    assert generator.fit(train, [])["few_shot_examples"] == 3
    generator.save(tmp_path / "generator")
    loaded = PromptOnlyGenerator.load(tmp_path / "generator")
    found = loaded.generate([PAIRS[0][1], PAIRS[3][1]], [2, 0], n=2)
    usage = loaded.usage()
    assert len(found) == 2 and all(len(queries) <= 2 for queries in found)
    assert usage["answers"] + usage["failed"] == 2 and sum(map(len, found)) > 0 or usage["failed"] == 2
    queries = ["北京天气", "红烧肉", "红烧肉的家常做法"]
    records = [{"id": f"q{level}", "doc_id": "d0", "doc": PAIRS[0][1], "query": query, "level": level,
                "probability": 0.5 + level / 10} for level, query in enumerate(queries)]
    check = LLMOrderCheck(SCALE, llm)
    dropped = check.contradicting(records)
    assert check.compared == 2 and dropped <= {"q0", "q1", "q2"}
    assert check.client.stats.answers + check.client.stats.failed == 2


def test_run_with_llm_judge_on_a_small_qbqtc_slice(llm_server, tmp_path):
    """`relevel judge train` and `judge eval` with judge.backend llm: calibration, metrics and usage in the
    manifest; the key from the environment never reaches a file."""
    qbqtc = Path(__file__).resolve().parents[2] / "shared" / "data" / "qbqtc"
    train = write_lines(tmp_path / "train.json", [json.loads(line) for line in
                                                  (qbqtc / "train.json").read_text(encoding="utf-8").splitlines()[:40]])
    dev = write_lines(tmp_path / "dev.json", [json.loads(line) for line in
                                              (qbqtc / "dev.json").read_text(encoding="utf-8").splitlines()[:6]])
    config = tmp_path / "llm.yaml"
    config.write_text(f"""\
name: qbqtc-llm-slice
scale:
  levels:
    - {{value: 0, name: poor, description: "does not meet the intent"}}
    - {{value: 1, name: partial, description: "related, key aspects missing"}}
    - {{value: 2, name: high, description: "fully meets the intent"}}
data:
  train: {train}
  dev: {dev}
  fields: {{id: id, query: query, level: label}}
  document: {{template: "{{title}}"}}
llm:
  base_url: {llm_server.base_url}
  model: smollm2
  api_key_env: RELEVEL_TEST_KEY
  cache_dir: {tmp_path / "llm-cache"}
  max_tokens: 96
  response_format: llama_cpp_schema
judge:
  backend: llm
  calibration_pairs: 4
  tune_fraction: 0.3
runtime: {{progress: false}}
""", encoding="utf-8")
    canary = "sk-canary-1234567890"
    env = {**os.environ, "RELEVEL_TEST_KEY": canary}
    result = relevel_cli("judge", "train", "--config", config, "--out", tmp_path / "run", env=env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "judge-dev" / "manifest.json").read_text())
    assert manifest["counts"]["predictions"] == 6 and manifest["metrics"]["llm"]["answers"] >= 1
    assert "macro_f1" in manifest["metrics"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "LLM requests per step" in report
    assert not any(canary in p.read_text(errors="ignore") for p in (tmp_path / "run").rglob("*") if p.is_file())


def test_content_rewrite_fills_the_template_field_before_ingest_and_reruns_from_the_cache(llm_server, tmp_path):
    """`rewrite:` turns each row's rich fields into the `video_text` the template renders; a row already
    filled is kept, a row with no field to rewrite is a reject naming its line in the user's file; a rerun
    asks the server nothing."""
    demo = [json.loads(line) for line in (REPO / "src" / "relevel" / "demo" / "train.jsonl").read_text(
        encoding="utf-8").splitlines()[:4]]
    rows = [{"id": r["id"], "query": r["query"], "title": r["title"], "ocr": r["video_text"][:20],
             "asr": r["video_text"], "tags": "短视频", "label": r["label"]} for r in demo[:3]]
    rows.append(demo[3])  # video_text already there: kept as it is
    rows.append({"id": 99, "query": "无内容", "label": 0})  # nothing to rewrite, and no title either
    train = write_lines(tmp_path / "train.jsonl", rows)
    config = tmp_path / "rewrite.yaml"
    config.write_text(f"""\
name: rewrite-slice
scale:
  levels:
    - {{value: 0, name: poor, description: "does not meet the intent"}}
    - {{value: 1, name: partial, description: "key entities related, important aspects mismatched"}}
    - {{value: 2, name: good, description: "mostly meets it"}}
    - {{value: 3, name: perfect, description: "fully meets the intent"}}
data:
  train: {train}
  fields: {{id: id, query: query, level: label}}
  document: {{template: "Title:{{title}};Video_text:{{video_text}}"}}
  on_error: reject
llm:
  base_url: {llm_server.base_url}
  model: smollm2
  cache_dir: {tmp_path / "llm-cache"}
  max_tokens: 96
  response_format: llama_cpp_schema
rewrite:
  fields: [title, ocr, asr, tags]
  max_chars: 120
runtime: {{progress: false}}
""", encoding="utf-8")
    run_dir = tmp_path / "run"
    args = ["run", "--config", config, "--out", run_dir, "--until", "ingest-train"]
    result = relevel_cli(*args)
    assert result.returncode == 0, result.stderr
    rewrite = json.loads((run_dir / "rewrite-train" / "manifest.json").read_text())["metrics"]
    outcomes = rewrite["rows"]
    assert outcomes["rewritten"] + outcomes.get("unparseable", 0) == 3
    assert outcomes["already filled"] == 1 and outcomes["no field to rewrite"] == 1
    assert rewrite["llm"]["answers"] == outcomes["rewritten"] >= 1

    records = list(read_records(run_dir / "ingest-train" / "records"))
    rejects = list(read_records(run_dir / "ingest-train" / "rejects"))
    assert len(records) == 1 + outcomes["rewritten"] and len(rejects) == 1 + outcomes.get("unparseable", 0)
    texts = [r["doc"].split(";Video_text:", 1)[1] for r in records]
    assert all(0 < len(text) <= 120 for text in texts) and demo[3]["video_text"] in texts
    assert {"path": str(train), "line": 5, "field": "title"}.items() <= rejects[-1].items()

    for step in ("rewrite-train", "ingest-train"):
        shutil.rmtree(run_dir / step)
    again = relevel_cli(*args)
    assert again.returncode == 0, again.stderr
    usage = json.loads((run_dir / "rewrite-train" / "manifest.json").read_text())["metrics"]["llm"]
    assert usage["requests"] == 0 and usage["cache_hits"] == usage["lookups"] >= 3
    assert list(read_records(run_dir / "ingest-train" / "records")) == records


def test_experiment_fills_the_prompt_only_and_vanilla_rows_on_a_small_slice(llm_server, tmp_path):
    """The whole run on a slice of the demo data with an LLM endpoint: the prompt-only generator synthesises for
    the same documents as SSRA, the same judge filters, and the experiment reports both baseline rows."""
    demo = Path(__file__).resolve().parents[1] / "src" / "relevel" / "demo"

    def head(name: str, n: int) -> Path:
        return write_lines(tmp_path / name, (demo / name).read_text(encoding="utf-8").splitlines()[:n])

    config = tmp_path / "small.yaml"
    config.write_text(f"""\
extends: builtin:demo/demo.yaml
name: demo-slice-llm
data: {{train: {head("train.jsonl", 200)}, dev: {head("dev.jsonl", 30)}, unlabeled: {head("unlabeled.jsonl", 4)}}}
llm: {{base_url: {llm_server.base_url}, model: smollm2, cache_dir: {tmp_path / "llm-cache"}, max_tokens: 96,
       response_format: llama_cpp_schema}}
generator: {{epochs: 1}}
control: {{documents: 10, queries_per_level: 1}}
synthesis: {{rounds: 1, retrain_epochs: 1, llm_order_check: true}}
embedder: {{steps: 2, batch_size: 8}}
experiment: {{variants: [real, ssra, vanilla, prompt-only], seeds: [0], baselines: false, bootstrap: 0}}
runtime: {{progress: false}}
""", encoding="utf-8")
    result = relevel_cli("run", "--config", config, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    synthesis = json.loads((run / "synthesize-prompt-only" / "manifest.json").read_text())["metrics"]
    ssra = json.loads((run / "synthesize-r1" / "manifest.json").read_text())["metrics"]
    assert sum(synthesis["requested"].values()) == sum(ssra["requested"].values()) == 4
    assert synthesis["llm"]["answers"] + synthesis["llm"]["failed"] == 4
    filtered = json.loads((run / "filter-prompt-only" / "manifest.json").read_text())["metrics"]
    assert "order (LLM)" in filtered["dropped_by_reason"] and "pairs_compared" in filtered["llm"]
    report = (run / "report.md").read_text(encoding="utf-8")
    rows = [line for line in report.splitlines() if line.startswith(("| prompt-only |", "| vanilla |"))]
    assert len(rows) == 2 + 2 * 4  # the embedder table's two rows, and each baseline's per-level rows
    assert "LLM requests per step" in report and "| synthesize-prompt-only |" in report
    assert "Not built yet" not in report  # every stage is built


SERVE_AND_WAIT = """
import sys, time
from relevel.models.llm.client import LLMClient
from relevel.models.llm.config import LLMConfig
client = LLMClient(LLMConfig.model_validate_json(sys.argv[1]))
print(client._server.process.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, only not yet reaped
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_serve_runs_a_server_per_process_that_dies_with_it(tmp_path):
    """`llm.serve` (vLLM in each Ray actor on a GPU node; llama.cpp here): started on a free port, answers,
    stops when the client closes, and dies with the process that started it even on SIGKILL."""
    config = endpoint("http://127.0.0.1:{port}/v1", tmp_path / "cache", response_format="none", max_tokens=8,
                      serve=llama_server_command("smollm2"), serve_timeout_s=120)
    assert "serve" not in _jsonable(config)  # transport: not part of any cache key
    with LLMClient(config) as client:
        server = client._server.process
        [answer] = client.complete([ChatRequest(({"role": "user", "content": "Say hi"},))], lambda a: a.content)
        assert answer and "{port}" not in client.base_url
    assert server.poll() is not None

    parent = subprocess.Popen([sys.executable, "-c", SERVE_AND_WAIT, config.model_dump_json()],
                              stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    assert alive(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(server_pid), "the server outlived the process that started it"

    with pytest.raises(RelevelError, match="cannot start 'no-such-server'"):
        LLMClient(config.model_copy(update={"serve": ("no-such-server", "--port", "{port}")}))
    with pytest.raises(RelevelError, match="exited with code"):
        LLMClient(config.model_copy(update={"serve": (sys.executable, "-c", "import sys; sys.exit(3)")}))
