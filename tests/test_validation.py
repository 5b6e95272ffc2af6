"""Every kind of bad record: an error naming file, line and field by default, a counted reject otherwise."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import pair, write_lines
from relevel.data.schema import Document, LabeledPair
from relevel.data.validation import RecordReader, Reject, guess_kind
from relevel.errors import InputError

BAD_ROWS = {
    "bad JSON": ('{"id": 9, "query": "x", ', None, "bad JSON"),
    "not an object": ("[1, 2]", None, "expected a JSON object"),
    "missing query": (json.dumps({k: v for k, v in pair(9).items() if k != "query"}), "query", "missing"),
    "empty query": (json.dumps(pair(9, query="  ")), "query", "empty"),
    "missing doc field": (json.dumps({k: v for k, v in pair(9).items() if k != "video_text"}), "video_text",
                          "missing"),
    "level out of scale": (json.dumps(pair(9, level="7")), "label", "outside the scale"),
    "non-integer level": (json.dumps(pair(9, level=1.5)), "label", "expected an integer level"),
    "text level": (json.dumps(pair(9, level="x")), "label", "expected an integer level"),
    "missing level": (json.dumps({k: v for k, v in pair(9).items() if k != "label"}), "label", "missing"),
    "wrong type": (json.dumps(pair(9, query=123)), "query", "expected text, got int"),
    "duplicate id": (json.dumps(pair(1, query="另一个")), "id", "duplicate id 1 (first on line 1)"),
}


def read_all(reader, path):
    return list(reader.read(path))


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_row_stops_with_file_line_field(tmp_path, scale4, video_spec, kind):
    line, field, reason = BAD_ROWS[kind]
    path = write_lines(tmp_path / "train.jsonl", [pair(1), line, pair(3)])
    reader = RecordReader(video_spec, scale4, "pairs", scope="train")
    with pytest.raises(InputError) as error:
        read_all(reader, path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 2, field)
    assert reason in error.value.reason
    assert str(error.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_row_is_a_counted_reject(tmp_path, scale4, video_spec, kind):
    line, field, reason = BAD_ROWS[kind]
    path = write_lines(tmp_path / "train.jsonl", [pair(1), line, pair(3)])
    reader = RecordReader(video_spec, scale4, "pairs", scope="train", on_error="reject")
    out = read_all(reader, path)
    rejects = [r for r in out if isinstance(r, Reject)]
    assert [r.id for r in out if isinstance(r, LabeledPair)] == ["train:1", "train:3"]
    assert len(rejects) == 1 and rejects[0].line == 2 and rejects[0].field == field
    assert reason in rejects[0].reason and rejects[0].raw == line
    assert reader.report.rejected == 1 and reader.report.records == 2 and reader.report.rows == 3


def test_invalid_utf8_bom_blank_lines_and_truncated_last_line(tmp_path, scale4, video_spec):
    path = tmp_path / "train.jsonl"
    good = json.dumps(pair(1), ensure_ascii=False).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n\n   \n" + b'{"id": 2, "query": "\xff\xfe"}\n'
                     + json.dumps(pair(3), ensure_ascii=False).encode() + b"\n" + b'{"id": 4, "que')
    reader = RecordReader(video_spec, scale4, "pairs", scope="train", on_error="reject")
    out = read_all(reader, path)
    assert [r.id for r in out if isinstance(r, LabeledPair)] == ["train:1", "train:3"]
    assert [(r.line, r.reason.split(" ")[0]) for r in out if isinstance(r, Reject)] == [(4, "invalid"), (6, "bad")]
    assert reader.report.blank_lines == 2


def test_duplicates_and_conflicts_are_counted_not_dropped(tmp_path, scale4, video_spec):
    same_doc = {"title": "红烧肉家常做法", "video_text": "一步步演示"}
    path = write_lines(tmp_path / "train.jsonl", [pair(1, **same_doc), pair(2, query=" 红烧肉怎么做 ", **same_doc),
                                                  pair(3, level=2, **same_doc), pair(4, level=2)])
    reader = RecordReader(video_spec, scale4, "pairs", scope="train")
    assert len(read_all(reader, path)) == 4
    assert (reader.report.duplicate_pairs, reader.report.conflicting_pairs) == (1, 1)


def test_ids_scoped_by_file_and_documents_keyed_by_text(tmp_path, scale4, video_spec):
    a = write_lines(tmp_path / "a.jsonl", [pair(1)])
    b = write_lines(tmp_path / "b.jsonl", [pair(1)])
    [pa_] = read_all(RecordReader(video_spec, scale4, "pairs", scope="train"), a)
    [pb_] = read_all(RecordReader(video_spec, scale4, "pairs", scope="dev"), b)
    assert (pa_.id, pb_.id) == ("train:1", "dev:1")
    assert pa_.doc_id == pb_.doc_id and pa_.doc == "Title:红烧肉家常做法1;Video_text:一步步演示"
    docs = write_lines(tmp_path / "docs.jsonl", [{"id": 5, "title": "柯基训练", "video_text": "坐下"}])
    assert guess_kind(docs, video_spec) == "documents" and guess_kind(a, video_spec) == "pairs"
    [doc] = read_all(RecordReader(video_spec, scale4, "documents", scope="pool"), docs)
    assert isinstance(doc, Document) and doc.fields == {"title": "柯基训练", "video_text": "坐下"}


@pytest.mark.parametrize("delimiter, suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_csv_and_tsv(tmp_path, scale4, video_spec, delimiter, suffix):
    path = tmp_path / f"train{suffix}"
    rows = ["id,query,title,video_text,label", "1,红烧肉怎么做,红烧肉做法,演示,3",
            '2,"红烧肉,热量",红烧肉做法,演示,1', "3,,红烧肉做法,演示,3", "4,q,t,v,9,extra", "", "5,q,t,v,0"]
    path.write_text("\ufeff" + "\n".join(r.replace(",", delimiter) if delimiter != "," else r for r in rows)
                    + "\n", encoding="utf-8")
    reader = RecordReader(video_spec, scale4, "pairs", scope="train", on_error="reject")
    out = read_all(reader, path)
    kept = [r for r in out if isinstance(r, LabeledPair)]
    assert [r.id for r in kept] == ["train:1", "train:2", "train:5"]
    assert [(r.line, r.field) for r in out if isinstance(r, Reject)] == [(4, "query"), (5, None)]
    assert reader.report.blank_lines == 1


def test_parquet(tmp_path, scale4, video_spec):
    path = tmp_path / "train.parquet"
    rows = [pair(1), pair(2, level=5), pair(3, level="2")]
    pq.write_table(pa.Table.from_pylist([{**r, "label": str(r["label"])} for r in rows]), path)
    reader = RecordReader(video_spec, scale4, "pairs", scope="train", on_error="reject")
    out = read_all(reader, path)
    assert [r.level for r in out if isinstance(r, LabeledPair)] == [3, 2]
    assert [(r.line, r.field) for r in out if isinstance(r, Reject)] == [(2, "label")]


def test_unknown_format_and_missing_file(tmp_path, scale4, video_spec):
    reader = RecordReader(video_spec, scale4, "pairs", scope="train")
    with pytest.raises(InputError, match="unknown file type '.xml'"):
        read_all(reader, write_lines(tmp_path / "x.xml", ["<a/>"]))
    with pytest.raises(InputError, match="file not found"):
        read_all(reader, tmp_path / "nope.jsonl")


def test_over_long_fields_are_cut_and_counted(tmp_path, scale4, video_spec):
    path = write_lines(tmp_path / "train.jsonl", [pair(1, query="长" * 50), pair(2, video_text="文" * 3000),
                                                  pair(3, query="长" * 50, level=9), pair(4)])
    reader = RecordReader(video_spec.model_copy(update={"max_field_chars": 20}), scale4, "pairs", scope="train",
                          on_error="reject")
    records = [r for r in read_all(reader, path) if isinstance(r, LabeledPair)]
    assert [len(r.query) for r in records] == [20, 6, 6]
    assert records[1].doc == "Title:红烧肉家常做法2;Video_text:" + "文" * 20
    assert reader.report.truncated == {"query": 1, "video_text": 1}  # the rejected row's cut is not counted
    unlimited = RecordReader(video_spec.model_copy(update={"max_field_chars": None}), scale4, "pairs", scope="t",
                             on_error="reject")
    assert len([r for r in read_all(unlimited, path) if isinstance(r, LabeledPair)][1].doc) > 3000
    assert not unlimited.report.truncated


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_an_unclosed_quote_rejects_its_own_line_not_the_rest_of_the_file(tmp_path, scale4, video_spec, suffix):
    sep = "," if suffix == ".csv" else "\t"
    lines = ["id,query,title,video_text,label", '1,"红烧肉,t,v,3', "2,q,t,v,0", '3,"多行\n查询",t,v,1', "4,q,t,v",
             '5,q"x,t,v,2']
    path = tmp_path / f"train{suffix}"
    path.write_text("\n".join(line.replace(",", sep) for line in lines), encoding="utf-8")  # no final newline
    reader = RecordReader(video_spec, scale4, "pairs", scope="train", on_error="reject")
    out = read_all(reader, path)
    assert [(r.id, r.query) for r in out if isinstance(r, LabeledPair)] == [
        ("train:2", "q"), ("train:3", "多行\n查询"), ("train:5", 'q"x')]
    assert [(r.line, r.reason) for r in out if isinstance(r, Reject)] == [
        (2, "unbalanced quotes"), (6, "4 columns, the header has 5")]
    with pytest.raises(InputError, match=rf"train{suffix}:2: unbalanced quotes"):
        read_all(RecordReader(video_spec, scale4, "pairs", scope="train"), path)


def test_parquet_wrong_types_and_nulls_are_rejects_naming_the_field(tmp_path, scale4, video_spec):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "query": ["q", None, "q", "q"], "title": ["t"] * 4,
                             "video_text": ["v"] * 4, "label": [3.0, 1.0, 1.5, None]}), path)
    reader = RecordReader(video_spec, scale4, "pairs", scope="train", on_error="reject")
    out = read_all(reader, path)
    assert [(r.line, r.field, r.reason.split(",")[0]) for r in out if isinstance(r, Reject)] == [
        (1, "label", "expected an integer level 0..3"), (2, "query", "missing"),
        (3, "label", "expected an integer level 0..3"), (4, "label", "missing")]
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": [1], "query": [42], "title": ["t"], "video_text": ["v"], "label": [2]}), ints)
    with pytest.raises(InputError, match=r"ints.parquet:1: field 'query': expected text, got int 42"):
        read_all(RecordReader(video_spec, scale4, "pairs", scope="train"), ints)
