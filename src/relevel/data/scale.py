"""The level scale is configuration: QBQTC has 3 levels (0..2), short-video search has 4 (0..3)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: int = Field(ge=0, description="Integer label as it appears in the data.")
    name: str = Field(min_length=1, description="Short name, e.g. 'perfect'.")
    description: str = Field("", description="What the level means; shown to reviewers and LLM prompts.")


class LevelScale(BaseModel):
    """Ordered relevance levels 0..N-1 and the thresholds at which a pair counts as relevant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: tuple[Level, ...] = Field(description="Every level, lowest first; values must be 0..N-1.")
    thresholds: tuple[int, ...] | None = Field(
        None,
        description="Levels t at which 'level >= t' counts as relevant (AP per threshold). "
        "Default: every level above the lowest.",
    )

    @model_validator(mode="after")
    def _check(self) -> LevelScale:
        values = [level.value for level in self.levels]
        if len(values) < 2 or values != list(range(len(values))):
            raise ValueError(f"level values must be 0..N-1 in order with N >= 2, got {values}")
        bad = [t for t in self.thresholds or () if t not in values[1:]]
        if bad:
            raise ValueError(f"thresholds {bad} must be levels in 1..{values[-1]}")
        return self

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def max_level(self) -> int:
        return len(self.levels) - 1

    @property
    def relevance_thresholds(self) -> tuple[int, ...]:
        return self.thresholds or tuple(range(1, self.num_levels))

    def name_of(self, level: int) -> str:
        return self.levels[level].name

    def parse(self, raw: object) -> int:
        """An integer, or an integer-like string, inside the scale; anything else raises ValueError."""
        if isinstance(raw, bool):
            raise ValueError(f"expected an integer level, got {raw!r}")
        if isinstance(raw, int):
            level = raw
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            level = int(raw.strip())
        else:
            raise ValueError(f"expected an integer level 0..{self.max_level}, got {raw!r}")
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level {raw!r} is outside the scale 0..{self.max_level}")
        return level
