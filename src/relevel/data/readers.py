"""Row readers for JSON lines, CSV/TSV and Parquet.

They never raise on a bad row: each row comes back as a `RawRow` with either its data or the reason it
could not be read, so validation decides (stop or reject) in one place, with the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from relevel.errors import InputError

Format = Literal["jsonl", "csv", "tsv", "parquet"]
_SUFFIX_FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
_BOM = "\ufeff"


@dataclass(frozen=True)
class RawRow:
    """One input line (or Parquet row, 1-based). `data` is None when the row could not be parsed."""

    path: Path
    line: int
    data: dict | None = None
    error: str | None = None
    raw: str = ""
    blank: bool = False


def detect_format(path: Path, declared: Format | None = None) -> Format:
    if declared:
        return declared
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(_SUFFIX_FORMATS))
        raise InputError(path, None, None, f"unknown file type '{path.suffix}'; use one of {known} "
                         "or set `format` in the config") from None


def count_lines(path: Path) -> int:
    """Line breaks in a text file, read in blocks (a cheap upper bound on its rows)."""
    with Path(path).open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def iter_rows(path: Path, fmt: Format | None = None) -> Iterator[RawRow]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, None, "file not found")
    fmt = detect_format(path, fmt)
    if fmt == "jsonl":
        yield from _iter_jsonl(path)
    elif fmt == "parquet":
        yield from _iter_parquet(path)
    else:
        yield from _iter_delimited(path, "," if fmt == "csv" else "\t")


def _iter_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as handle:
        for line_no, raw_bytes in enumerate(handle, start=1):
            try:
                text = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(path, line_no, error=f"invalid UTF-8 at byte {exc.start}",
                             raw=raw_bytes.decode("utf-8", "replace").rstrip("\r\n"))
                continue
            if line_no == 1:
                text = text.removeprefix(_BOM)
            text = text.rstrip("\r\n")
            if not text.strip():
                yield RawRow(path, line_no, raw=text, blank=True)
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRow(path, line_no, error=f"bad JSON: {exc.msg} (column {exc.colno})", raw=text)
                continue
            if not isinstance(data, dict):
                yield RawRow(path, line_no, error=f"expected a JSON object, got {type(data).__name__}", raw=text)
                continue
            yield RawRow(path, line_no, data=data, raw=text)


MAX_RECORD_LINES = 100  # a quoted field may span lines; an unclosed quote must not swallow the rest of the file


def _iter_delimited(path: Path, delimiter: str) -> Iterator[RawRow]:
    """One row per record. A record spans several lines only where a quoted field holds line breaks; a quote
    that never closes (a truncated or hand-edited file) rejects its own line, and the lines after it are read
    as rows of their own instead of vanishing into one field."""
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        lines = enumerate(handle, start=1)
        pending: list[tuple[int, str]] = []  # lines read ahead for a multi-line record that was not one
        header: list[str] | None = None

        def next_line() -> tuple[int, str] | None:
            return pending.pop(0) if pending else next(lines, None)

        while (first := next_line()) is not None:
            start, text = first
            taken = [first]
            while text.count('"') % 2 and len(taken) < MAX_RECORD_LINES and (more := next_line()) is not None:
                taken.append(more)
                text += more[1]
            cells = _single_row(text, delimiter)
            if len(taken) > 1 and (cells is None or header is not None and len(cells) != len(header)):
                pending[:0] = taken[1:]  # not one record after all: only its first line is bad
                text, cells = first[1], _single_row(first[1], delimiter)
            raw = text.rstrip("\r\n")
            if cells is None or text.count('"') % 2 and header is not None and len(cells) != len(header):
                yield RawRow(path, start, error="unbalanced quotes", raw=raw)
            elif not any(cell.strip() for cell in cells):
                yield RawRow(path, start, raw=raw, blank=True)
            elif header is None:
                header = [cell.removeprefix(_BOM).strip() for cell in cells]
            elif len(cells) != len(header):
                yield RawRow(path, start, error=f"{len(cells)} columns, the header has {len(header)}", raw=raw)
            elif _has_surrogates(raw):
                yield RawRow(path, start, error="invalid UTF-8", raw=raw.encode("utf-8", "replace").decode())
            else:
                yield RawRow(path, start, data=dict(zip(header, cells)), raw=raw)


def _single_row(text: str, delimiter: str) -> list[str] | None:
    """The cells of `text` if it is exactly one CSV record, else None."""
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    return rows[0] if len(rows) == 1 else [] if not rows else None


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _iter_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq  # heavy; only Parquet users pay for it

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise InputError(path, None, None, f"not a readable Parquet file ({exc})") from None
    row_no = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for data in batch.to_pylist():
            row_no += 1
            yield RawRow(path, row_no, data=data, raw=json.dumps(data, ensure_ascii=False, default=str))
