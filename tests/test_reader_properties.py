"""Property: whatever the corruption, every input line ends up exactly once: a record, a reject or a blank."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import pair
from relevel.data.schema import LabeledPair
from relevel.data.validation import DatasetSpec, RecordReader, Reject


def corrupt(line: bytes, how: str, position: int, junk: bytes) -> bytes:
    cut = position % (len(line) + 1)
    return {
        "keep": line,
        "truncate": line[:cut],
        "insert": line[:cut] + junk + line[cut:],
        "replace": junk,
        "blank": b"   ",
    }[how]


lines_strategy = st.lists(
    st.tuples(st.sampled_from(["keep", "truncate", "insert", "replace", "blank"]),
              st.integers(min_value=0, max_value=500),
              st.binary(min_size=0, max_size=8).filter(lambda b: b"\n" not in b and b"\r" not in b),
              st.sampled_from(["0", "3", "7", "x", 1.5, None, 2])),
    min_size=1, max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines_strategy)
def test_every_line_is_accounted_for_exactly_once(tmp_path_factory, scale4, lines):
    spec = DatasetSpec.model_validate({"fields": {"id": None},
                                       "document": {"template": "Title:{title};Video_text:{video_text}"}})
    raw = [corrupt(json.dumps(pair(i, level=level), ensure_ascii=False).encode(), how, pos, junk)
           for i, (how, pos, junk, level) in enumerate(lines, start=1)]
    path = tmp_path_factory.mktemp("prop") / "train.jsonl"
    path.write_bytes(b"\n".join(raw) + b"\n")
    reader = RecordReader(spec, scale4, "pairs", scope="t", on_error="reject")
    out = list(reader.read(path))
    record_lines = [int(r.id.removeprefix("t:L")) for r in out if isinstance(r, LabeledPair)]
    reject_lines = [r.line for r in out if isinstance(r, Reject)]
    blank_lines = [i for i, line in enumerate(raw, start=1) if not line.decode("utf-8", "replace").strip()]
    seen = record_lines + reject_lines + blank_lines
    assert sorted(seen) == list(range(1, len(raw) + 1))
    assert reader.report.blank_lines == len(blank_lines)
    assert reader.report.rows == len(record_lines) + len(reject_lines)
