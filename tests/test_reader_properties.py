"""Property: whatever the corruption, every input line ends up exactly once: in a record, a reject or a blank
(a CSV record with a quoted line break takes its following line too), in every reader."""

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import pair
from relevel.data.readers import iter_rows
from relevel.data.schema import LabeledPair
from relevel.data.validation import DatasetSpec, RecordReader, Reject

SPEC = DatasetSpec.model_validate({"fields": {"id": None}, "max_field_chars": 12,
                                   "document": {"template": "Title:{title};Video_text:{video_text}"}})
COLUMNS = ["query", "title", "video_text", "label"]
CORRUPTIONS = ["keep", "keep", "truncate", "insert", "replace", "blank"]


def corrupt(line: bytes, how: str, position: int, junk: bytes) -> bytes:
    cut = position % (len(line) + 1)
    return {
        "keep": line,
        "truncate": line[:cut],
        "insert": line[:cut] + junk + line[cut:],
        "replace": junk,
        "blank": b"   ",
    }[how]


# junk: any bytes but line breaks, with quotes and separators likely
junk_strategy = st.lists(st.one_of(st.sampled_from([b'"', b",", b"\t", b"{", b"\xff", b"\xe4\xb8"]),
                                   st.binary(min_size=1, max_size=3)), max_size=4).map(b"".join).filter(
    lambda b: b"\n" not in b and b"\r" not in b)
lines_strategy = st.lists(
    st.tuples(st.sampled_from(CORRUPTIONS), st.integers(min_value=0, max_value=500), junk_strategy,
              st.sampled_from(["0", "3", "7", "x", 1.5, None, 2]), st.sampled_from(["", "多", "长" * 30])),
    min_size=1, max_size=30)


def encode(row: dict, suffix: str) -> bytes:
    if suffix == ".jsonl":
        return json.dumps(row, ensure_ascii=False).encode()
    out = io.StringIO()
    csv.writer(out, delimiter="," if suffix == ".csv" else "\t", lineterminator="").writerow(
        ["" if row[c] is None else row[c] for c in COLUMNS])
    return out.getvalue().encode()


def assert_every_line_once(path, raw_lines: list[bytes], first_data_line: int) -> None:
    reader = RecordReader(SPEC, _scale(), "pairs", scope="t", on_error="reject")
    out = list(reader.read(path))
    rows = [row for row in iter_rows(path) if row.line >= first_data_line]
    spans = [range(row.line, row.line + row.raw.count("\n") + 1) for row in rows]  # quoted line breaks
    covered = sorted(line for span in spans for line in span)
    assert covered == list(range(first_data_line, len(raw_lines) + 1))
    starts = sorted([int(r.id.removeprefix("t:L")) for r in out if isinstance(r, LabeledPair)]
                    + [r.line for r in out if isinstance(r, Reject)]
                    + [row.line for row in rows if row.blank])
    assert starts == [row.line for row in rows]
    assert reader.report.blank_lines == sum(row.blank for row in rows)
    assert reader.report.rows == len(out)
    template_chars = len(SPEC.document.template) - len("{title}") - len("{video_text}")  # "Title:", ";Video_text:"
    assert all(len(r.query) <= 12 and len(r.doc) <= 12 * 2 + template_chars
               for r in out if isinstance(r, LabeledPair))


def _scale():
    from relevel.data.scale import Level, LevelScale

    return LevelScale(levels=tuple(Level(value=v, name=f"l{v}") for v in range(4)))


def check_corrupted_text_file(tmp_path_factory, lines, suffix: str) -> None:
    header = [] if suffix == ".jsonl" else [encode(dict(zip(COLUMNS, COLUMNS)), suffix)]
    raw = header + [corrupt(encode({**pair(i, level=level), "video_text": text or None}, suffix), how, pos, junk)
                    for i, (how, pos, junk, level, text) in enumerate(lines, start=1)]
    path = tmp_path_factory.mktemp("prop") / f"train{suffix}"
    path.write_bytes(b"\n".join(raw) + b"\n")
    assert_every_line_once(path, raw, first_data_line=len(header) + 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines_strategy)
def test_jsonl_every_line_is_accounted_for_exactly_once(tmp_path_factory, lines):
    check_corrupted_text_file(tmp_path_factory, lines, ".jsonl")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines_strategy)
def test_csv_every_line_is_accounted_for_exactly_once(tmp_path_factory, lines):
    check_corrupted_text_file(tmp_path_factory, lines, ".csv")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines_strategy)
def test_tsv_every_line_is_accounted_for_exactly_once(tmp_path_factory, lines):
    check_corrupted_text_file(tmp_path_factory, lines, ".tsv")


cell = st.one_of(st.none(), st.sampled_from(["", " ", "多", "长" * 30, "0", "3", "7", "x", "1.5"]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({c: cell for c in COLUMNS}), min_size=1, max_size=30))
def test_parquet_every_row_is_a_record_or_a_reject(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("prop") / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in COLUMNS])), path)
    reader = RecordReader(SPEC, _scale(), "pairs", scope="t", on_error="reject")
    out = list(reader.read(path))
    lines = sorted([int(r.id.removeprefix("t:L")) for r in out if isinstance(r, LabeledPair)]
                   + [r.line for r in out if isinstance(r, Reject)])
    assert lines == list(range(1, len(rows) + 1)) and reader.report.rows == len(rows)
