"""Turn raw rows into typed records. A bad row stops the read with an error naming file, line and
field (`on_error="fail"`), or becomes a counted `Reject` (`on_error="reject"`); nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relevel.data.readers import Format, RawRow, iter_rows
from relevel.data.scale import LevelScale
from relevel.data.schema import Document, LabeledPair, Pair, normalize_text, text_id
from relevel.data.template import DocumentTemplate
from relevel.errors import InputError

OnError = Literal["fail", "reject"]
RecordKind = Literal["pairs", "unlabeled_pairs", "documents"]


class FieldMap(BaseModel):
    """Which input column holds what. Document fields come from the template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field("id", description="Record id column; null numbers records by line.")
    query: str = Field("query", description="Query column.")
    level: str = Field("label", description="Level column (integer or integer-like string).")


class DatasetSpec(BaseModel):
    """How to read one dataset: columns, document template, document ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: FieldMap = Field(default_factory=FieldMap)
    document: DocumentTemplate
    doc_id_field: str | None = Field(
        None, description="Column holding a document id; null derives it from the normalised rendered text."
    )
    format: Format | None = Field(None, description="File format; null detects it from the suffix.")
    max_field_chars: int | None = Field(
        2000, gt=0, description="Longer query and document field values are cut to this many characters and "
        "counted per field in the read report (`truncated`); null: no limit.")


@dataclass(frozen=True)
class Reject:
    path: str
    line: int
    field: str | None
    reason: str
    raw: str

    def to_dict(self) -> dict:
        return asdict(self)

    def to_error(self) -> InputError:
        return InputError(self.path, self.line, self.field, self.reason)


@dataclass
class ReadReport:
    """What a read saw, beyond the records themselves."""

    rows: int = 0
    records: int = 0
    rejects: Counter = field(default_factory=Counter)  # reason kind -> count
    blank_lines: int = 0
    duplicate_pairs: int = 0  # same normalised query, document and level as an earlier pair
    conflicting_pairs: int = 0  # same normalised query and document, another level
    truncated: Counter = field(default_factory=Counter)  # field -> values cut to max_field_chars, in records

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "rejects": dict(self.rejects), "truncated": dict(self.truncated),
                "rejected": self.rejected}


class RecordReader:
    """Reads one file into `LabeledPair`s (kind="pairs"), `Pair`s without a level (kind="unlabeled_pairs",
    e.g. to be judged) or `Document`s (kind="documents").

    Record ids are scoped by `scope` (e.g. the split name) because raw ids repeat across files.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        scale: LevelScale,
        kind: RecordKind,
        scope: str,
        on_error: OnError = "fail",
    ):
        self.spec, self.scale, self.kind, self.scope, self.on_error = spec, scale, kind, scope, on_error
        self.report = ReadReport()
        self._seen_ids: dict[str, int] = {}
        self._pair_levels: dict[tuple[str, str], set[int]] = {}
        self._row_truncated: list[str] = []  # fields cut in the row being parsed; counted if it becomes a record

    def read(self, path: Path) -> Iterator[LabeledPair | Pair | Document | Reject]:
        """Yields records and, with on_error="reject", `Reject`s, in file order."""
        return self.read_rows(iter_rows(Path(path), self.spec.format))

    def read_rows(self, rows: Iterable[RawRow]) -> Iterator[LabeledPair | Pair | Document | Reject]:
        """As `read`, over rows already read (e.g. rewritten by an LLM), which keep their file and line."""
        for row in rows:
            if row.blank:
                self.report.blank_lines += 1
                continue
            self.report.rows += 1
            self._row_truncated = []
            try:
                record = self._parse(row)
            except _RowError as exc:
                reject = Reject(str(row.path), row.line, exc.field, exc.reason, row.raw)
                if self.on_error == "fail":
                    raise reject.to_error() from None
                self.report.rejects[exc.kind] += 1
                yield reject
                continue
            self.report.records += 1
            self.report.truncated.update(self._row_truncated)
            yield record

    def _parse(self, row: RawRow) -> LabeledPair | Pair | Document:
        if row.data is None:
            raise _RowError("unreadable", None, row.error or "unreadable row")
        data = row.data
        record_id = self._record_id(row)
        fields = {name: self._text(data, name, optional=name in self.spec.document.optional)
                  for name in self.spec.document.fields}
        doc_text = self.spec.document.render(fields)
        doc_id = self._text(data, self.spec.doc_id_field) if self.spec.doc_id_field else text_id(doc_text)
        if self.kind == "documents":
            return Document(id=doc_id, fields={k: v for k, v in fields.items() if v is not None}, text=doc_text)
        query = self._text(data, self.spec.fields.query)
        if self.kind == "unlabeled_pairs":
            return Pair(id=record_id, query=query, doc_id=doc_id, doc=doc_text)
        level_field = self.spec.fields.level
        if level_field not in data or data[level_field] is None:
            raise _RowError("missing field", level_field, "missing")
        try:
            level = self.scale.parse(data[level_field])
        except ValueError as exc:
            raise _RowError("bad level", level_field, str(exc)) from None
        self._count_duplicate_pair(query, doc_id, level)
        return LabeledPair(id=record_id, query=query, doc_id=doc_id, doc=doc_text, level=level)

    def _record_id(self, row: RawRow) -> str:
        id_field = self.spec.fields.id
        if id_field is None:
            return f"{self.scope}:L{row.line}"
        raw = row.data.get(id_field)
        if raw is None or isinstance(raw, bool) or not isinstance(raw, (int, str)) or str(raw).strip() == "":
            raise _RowError("missing field" if raw in (None, "") else "wrong type", id_field,
                            "missing" if raw in (None, "") else f"expected an integer or string id, got {raw!r}")
        record_id = f"{self.scope}:{str(raw).strip()}"
        first_line = self._seen_ids.setdefault(record_id, row.line)
        if first_line != row.line:
            raise _RowError("duplicate id", id_field, f"duplicate id {raw!r} (first on line {first_line})")
        return record_id

    def _text(self, data: dict, name: str, optional: bool = False) -> str | None:
        value = data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if optional:
                return None
            raise _RowError("missing field", name, "missing" if value is None else "empty")
        if not isinstance(value, str):
            raise _RowError("wrong type", name, f"expected text, got {type(value).__name__} {value!r}")
        value, limit = value.strip(), self.spec.max_field_chars
        if limit is not None and len(value) > limit:
            self._row_truncated.append(name)
            value = value[:limit]
        return value

    def _count_duplicate_pair(self, query: str, doc_id: str, level: int) -> None:
        levels = self._pair_levels.setdefault((normalize_text(query), doc_id), set())
        if level in levels:
            self.report.duplicate_pairs += 1
        elif levels:
            self.report.conflicting_pairs += 1
        levels.add(level)


class _RowError(Exception):
    def __init__(self, kind: str, field: str | None, reason: str):
        super().__init__(reason)
        self.kind, self.field, self.reason = kind, field, reason


def guess_kind(path: Path, spec: DatasetSpec) -> RecordKind:
    """From the first readable row: a level column makes pairs, a query column unlabelled pairs, else
    documents (an unlabelled pool)."""
    for row in iter_rows(Path(path), spec.format):
        if row.data is not None:
            if spec.fields.level in row.data:
                return "pairs"
            return "unlabeled_pairs" if spec.fields.query in row.data else "documents"
    return "pairs"
