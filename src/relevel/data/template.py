"""Render a document's fields to text, e.g. `Title:{title};Video_text:{video_text}`."""

from __future__ import annotations

import string

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DocumentTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(description="Python format string over the document's fields.")
    optional: tuple[str, ...] = Field(
        (), description="Fields that may be missing or empty; they render as ''."
    )

    @field_validator("template")
    @classmethod
    def _parse(cls, template: str) -> str:
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"bad template {template!r}: {exc}") from None
        names = [name for _, name, _, _ in parsed if name is not None]
        if not names or any(not name.isidentifier() for name in names):
            raise ValueError(f"template {template!r} must name fields like {{title}}")
        return template

    @property
    def fields(self) -> tuple[str, ...]:
        names = (name for _, name, _, _ in string.Formatter().parse(self.template) if name)
        return tuple(dict.fromkeys(names))

    def missing(self, fields: dict[str, object]) -> list[str]:
        """Required fields that are absent or empty in `fields`."""
        return [
            name
            for name in self.fields
            if name not in self.optional and (fields.get(name) is None or str(fields[name]).strip() == "")
        ]

    def render(self, fields: dict[str, object]) -> str:
        missing = self.missing(fields)
        if missing:
            raise KeyError(missing[0])
        values = {name: "" if fields.get(name) is None else str(fields[name]).strip() for name in self.fields}
        return self.template.format(**values)
