"""Before ingest: an LLM rewrites each row's rich fields (title, OCR, ASR, tags) into the one text field the
document template renders. The rows keep their file and line, so ingest validates them, and names a bad
row, exactly as it would read the file itself."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from relevel.config import RewriteConfig
from relevel.data.readers import Format, RawRow, count_lines, iter_rows
from relevel.models.llm.rewrite import ContentRewriter
from relevel.pipeline.io import ChunkedOutputs
from relevel.pipeline.step import INPUT_FILE, RecordStep, StepContext, Work

UNPARSEABLE = "content rewrite: the LLM's answer stayed unparseable"


def row_from_record(path: Path, record: dict) -> RawRow:
    """A rewritten row as ingest reads it, naming the original file."""
    return RawRow(path=path, **record)


@dataclass(kw_only=True)
class RewriteContent(RecordStep):
    """Every row of one input file, with `config.output` filled by the LLM from `config.fields`. Rows whose
    output is already filled (unless `overwrite`), that have none of the fields, or that are unreadable pass
    through unchanged; a row whose answer stayed unparseable reaches ingest as an unreadable row."""

    outputs: ClassVar[tuple[str, ...]] = ("rows",)
    SECONDS_PER_ITEM: ClassVar[float] = 0.0  # the server's time, not ours

    path: Path = field(metadata=INPUT_FILE)
    format: Format | None = None
    config: RewriteConfig

    def items(self, ctx: StepContext):
        self._rewriter: ContentRewriter | None = None
        self._outcomes: Counter = Counter()
        self._progress = ctx.progress
        return iter_rows(self.path, self.format)

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if not self.path.is_file():
            return None
        lines = count_lines(self.path)  # at most one request per line
        return Work(lines, {"rows": lines})

    def process(self, batch: list[RawRow]) -> dict[str, list[dict]]:
        # values JSON lacks (a Parquet date, bytes) travel as text, as the rows are stored as JSON lines
        rows = [json.loads(json.dumps({k: v for k, v in asdict(row).items() if k != "path"}, default=str))
                for row in batch]
        todo, documents = [], []
        for i, row in enumerate(batch):
            if row.data is None:
                continue
            if str(row.data.get(self.config.output) or "").strip() and not self.config.overwrite:
                self._outcomes["already filled"] += 1
                continue
            fields = {name: str(row.data[name]).strip() for name in self.config.fields
                      if str(row.data.get(name) or "").strip()}
            if not fields:
                self._outcomes["no field to rewrite"] += 1  # ingest then names the missing field
                continue
            todo.append(i)
            documents.append(fields)
        if documents:
            if self._rewriter is None:
                self._rewriter = ContentRewriter(self.config.llm, self.config.max_chars)
            for i, text in zip(todo, self._rewriter.rewrite(documents, self._progress)):
                if text is None:
                    rows[i].update(data=None, error=UNPARSEABLE)
                    self._outcomes["unparseable"] += 1
                else:
                    rows[i]["data"] = {**rows[i]["data"], self.config.output: text}
                    self._outcomes["rewritten"] += 1
        return {"rows": rows}

    def usage(self) -> dict[str, Any]:
        return self._rewriter.usage() if self._rewriter is not None else {}

    def metrics(self, ctx: StepContext, outputs: ChunkedOutputs) -> dict[str, Any]:
        return {"rows": dict(self._outcomes)}  # this process's chunks (all of them unless resumed or on Ray)
