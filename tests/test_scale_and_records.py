import pytest
from pydantic import ValidationError

from relevel.data.scale import Level, LevelScale
from relevel.data.schema import LabeledPair, normalize_text, text_id
from relevel.data.template import DocumentTemplate


@pytest.mark.parametrize("raw, level", [(0, 0), (3, 3), ("1", 1), (" 2 ", 2)])
def test_scale_accepts_integers_and_integer_strings(scale4, raw, level):
    assert scale4.parse(raw) == level


@pytest.mark.parametrize("raw", ["x", "7", 7, -1, "-1", 1.5, "1.5", "", None, True, [1]])
def test_scale_rejects_everything_else(scale4, raw):
    with pytest.raises(ValueError):
        scale4.parse(raw)


def test_scale_is_configuration():
    three = LevelScale(levels=[Level(value=v, name=str(v)) for v in range(3)])
    assert (three.num_levels, three.max_level, three.relevance_thresholds) == (3, 2, (1, 2))
    assert LevelScale(levels=three.levels, thresholds=[2]).relevance_thresholds == (2,)
    with pytest.raises(ValidationError, match="0..N-1"):
        LevelScale(levels=[Level(value=v, name=str(v)) for v in (0, 2)])
    with pytest.raises(ValidationError, match="thresholds"):
        LevelScale(levels=three.levels, thresholds=[0])


def test_document_ids_are_stable_over_normalisation():
    assert normalize_text("  Ｈello\t WORLD ") == "hello world"
    assert text_id("Title:ABC ") == text_id("title:abc")
    assert text_id("a") != text_id("b")


def test_sources_are_checked():
    base = dict(id="train:1", query="q", doc_id="d-1", doc="t", level=1)
    for source in ("real", "reannotated", "synthetic-r2", "baseline-prompt-only"):
        assert LabeledPair(**base, source=source).source == source
    with pytest.raises(ValidationError):
        LabeledPair(**base, source="made-up")


def test_template_renders_and_names_missing_fields():
    template = DocumentTemplate(template="Title:{title};Video_text:{video_text}", optional=("video_text",))
    assert template.fields == ("title", "video_text")
    assert template.render({"title": "猫", "video_text": None}) == "Title:猫;Video_text:"
    assert template.missing({"video_text": "x"}) == ["title"]
    with pytest.raises(ValidationError, match="must name fields"):
        DocumentTemplate(template="no fields")
