"""Reading LLM answers strictly: JSON first (tolerating code fences and chatter around one object), then a
narrow pattern; anything else is a ParseError, counted and re-asked, never a silent default."""

from __future__ import annotations

import json
import math
import re

from relevel.data.scale import LevelScale
from relevel.models.llm.client import ChatAnswer, ParseError

LEVEL_PATTERN = re.compile(r'"?level"?\s*[:=]\s*"?(-?\d+)')


REASONING_CHARS = 300  # a short reasoning: the schema bounds it so a rambling model still reaches its level


def level_schema(scale: LevelScale) -> dict:
    """{"reasoning": ..., "level": ...} — reasoning first, so the level is written after it."""
    return {"type": "object", "required": ["reasoning", "level"], "properties": {
        "reasoning": {"type": "string", "maxLength": REASONING_CHARS},
        "level": {"type": "integer", "enum": list(range(scale.num_levels))}}}


def queries_schema(n: int) -> dict:
    return {"type": "object", "required": ["queries"], "properties": {
        "queries": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": n}}}


CHOICE_SCHEMA = {"type": "object", "required": ["reasoning", "more_relevant"], "properties": {
    "reasoning": {"type": "string", "maxLength": REASONING_CHARS}, "more_relevant": {"enum": ["A", "B"]}}}
TEXT_SCHEMA = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}


def json_object(text: str) -> dict:
    """The one JSON object in `text`."""
    if not text.strip():
        raise ParseError("the answer is empty")
    start = text.find("{")
    if start < 0:
        raise ParseError("no JSON object in the answer")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ParseError("the answer is not a JSON object")
    return value


def level_of(answer: ChatAnswer, scale: LevelScale) -> tuple[int, int]:
    """The level the answer gives, and the character offset of its value in the answer (for logprobs)."""
    try:
        raw = json_object(answer.content).get("level")
        if raw is None:
            raise ParseError("the JSON has no 'level'")
    except ParseError:
        matches = list(LEVEL_PATTERN.finditer(answer.content))
        if len(matches) != 1:
            raise ParseError("no single 'level' in the answer") from None
        raw = matches[0].group(1)
    try:
        level = scale.parse(raw)
    except ValueError as exc:
        raise ParseError(str(exc)) from None
    offset = _value_offset(answer.content, level)
    return level, offset


def _value_offset(content: str, level: int) -> int:
    matches = [m for m in LEVEL_PATTERN.finditer(content) if m.group(1) == str(level)]
    return matches[-1].start(1) if matches else -1


def level_logits(answer: ChatAnswer, scale: LevelScale) -> list[float]:
    """Log-probabilities of each level at the position where the answer writes its level; without logprobs
    from the server, the stated level only (the other levels far below it)."""
    level, offset = level_of(answer, scale)
    floor = -20.0
    one_hot = [0.0 if value == level else floor for value in range(scale.num_levels)]
    if answer.tokens is None or offset < 0:
        return one_hot
    position = 0
    for token in answer.tokens:
        if position <= offset < position + len(token.token):
            break
        position += len(token.token)
    else:
        return one_hot
    logits = [floor] * scale.num_levels
    for text, logprob in token.alternatives.items():
        digits = text.strip().strip('"')
        if digits.isdigit() and int(digits) < scale.num_levels and math.isfinite(logprob):
            logits[int(digits)] = max(logits[int(digits)], logprob)
    # the token may carry more than the digit (e.g. ' 2}'); trust the stated level when its alternatives miss it
    return logits if logits[level] > floor else one_hot


def queries_of(answer: ChatAnswer, n: int) -> list[str]:
    """Up to `n` distinct non-empty queries from {"queries": [...]}."""
    queries = json_object(answer.content).get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ParseError("'queries' must be a list of strings")
    distinct = list(dict.fromkeys(q.strip() for q in queries if q.strip()))
    if not distinct:
        raise ParseError("'queries' holds no non-empty query")
    return distinct[:n]


def choice_of(answer: ChatAnswer) -> str:
    """'A' or 'B' from {"more_relevant": ...}."""
    value = json_object(answer.content).get("more_relevant")
    choice = value.strip().strip('"').upper() if isinstance(value, str) else ""
    if choice not in ("A", "B"):
        raise ParseError(f"'more_relevant' must be \"A\" or \"B\", got {value!r}")
    return choice


def text_of(answer: ChatAnswer, max_chars: int) -> str:
    text = json_object(answer.content).get("text")
    if not isinstance(text, str) or not text.strip():
        raise ParseError("'text' must be a non-empty string")
    return text.strip()[:max_chars]
