"""Typed records that flow through the pipeline. Every record carries where it came from (`source`)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# real = human label; reannotated = stage-1 judge label; synthetic-rK = stage-2 round K; baseline-NAME.
SOURCE_PATTERN = r"^(real|reannotated|synthetic-r[0-9]+|baseline-[a-z0-9][a-z0-9-]*)$"
Source = Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The form used for ids, de-duplication and leakage checks: NFKC, lower case, single spaces."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def text_id(text: str, prefix: str = "d") -> str:
    """A stable id from the normalised text, so the same document gets the same id in every file."""
    return f"{prefix}-{hashlib.sha256(normalize_text(text).encode()).hexdigest()[:16]}"


class Document(BaseModel):
    """A document with its raw fields and its text rendered by the configured template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: NonEmpty
    fields: dict[str, str]
    text: NonEmpty = Field(description="Rendered by the document template.")
    source: Source = "real"


class Pair(BaseModel):
    """A (query, document) pair, e.g. one to be judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: NonEmpty = Field(description="Record id, scoped by its source file, e.g. 'train:17'.")
    query: NonEmpty
    doc_id: NonEmpty
    doc: NonEmpty = Field(description="Rendered document text.")
    source: Source = "real"


class LabeledPair(Pair):
    """A (query, document) pair with its relevance level on the configured scale."""

    level: int = Field(ge=0)
