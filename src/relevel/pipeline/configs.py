"""Settings of the stage-1 and stage-2 steps (pydantic only, so a config validates without loading models)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LinkingConfig(BaseModel):
    """Which real queries each document is linked to before the judge labels the links."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    documents: tuple[Literal["train", "unlabeled"], ...] = Field(
        ("train", "unlabeled"), description="Whose documents get links: the labelled ones, the pool, or both.")
    top: int = Field(4, ge=0, description="BM25's best-ranked queries per document (likely relevant).")
    middle: int = Field(3, ge=0, description="Queries drawn from BM25 ranks top..middle_depth (partly "
                        "relevant: where the intermediate levels are).")
    middle_depth: int = Field(50, gt=0, description="Deepest BM25 rank the middle draw reaches.")
    random: int = Field(1, ge=0, description="Random queries from the pool (mostly irrelevant).")
    max_links_per_query: int = Field(20, gt=0, description="Cap on documents one query is linked to, so a "
                                     "popular query does not dominate the generator's data.")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> LinkingConfig:
        if self.top + self.middle + self.random == 0:
            raise ValueError("top + middle + random must be at least 1")
        if self.middle and self.middle_depth <= self.top:
            raise ValueError(f"middle_depth ({self.middle_depth}) must be deeper than top ({self.top})")
        return self


class AnnotationConfig(BaseModel):
    """Which judged links join the human pairs in the D2Q data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_confidence: float = Field(0.6, ge=0, le=1, description="Keep a link only if the judge's calibrated "
                                  "probability of its predicted level is at least this.")


class ControlConfig(BaseModel):
    """How control accuracy is measured: queries generated for held-out (evaluation) documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    documents: int = Field(300, gt=0, description="Evaluation documents sampled for the measurement.")
    queries_per_level: int = Field(2, gt=0, description="Queries generated per document and level.")
    seed: int = 0
