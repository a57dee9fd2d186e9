"""Pydantic request and response models of the scoring API (they define the published OpenAPI schema).

Numbers are strict: ``"1.5"``, ``true`` and ``null`` are rejected rather than coerced, so a string in a
feature column is a 400 that names the cell, not a silently converted value.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag

Number = Annotated[float, Strict()]


def _row_kind(value: Any) -> str:
    return "record" if isinstance(value, dict) else "values"


def _contamination_kind(value: Any) -> str:
    return "none" if value is None else "auto" if isinstance(value, str) else "rate"


#: a share of outliers in [0, 0.5], "auto" (robust z-score of the fit-set scores), or null
Contamination = Annotated[
    Annotated[float, Strict(), Field(ge=0.0, le=0.5), Tag("rate")]
    | Annotated[Literal["auto"], Tag("auto")]
    | Annotated[None, Tag("none")],
    Discriminator(_contamination_kind),
]


#: one input row: ``{"feature": value, ...}`` or ``[value, ...]`` in the artifact's feature order
Row = Annotated[
    Annotated[dict[str, Number], Tag("record")] | Annotated[list[Number], Tag("values")],
    Discriminator(_row_kind),
]


class ScoreOptions(BaseModel):
    """Per-request options shared by ``/score`` and ``/score_csv``."""

    model_config = ConfigDict(extra="forbid")

    explain: Annotated[bool, Strict()] = Field(False, description="Add per-feature contributions to each result.")
    threshold: Number | None = Field(None, description="Label with this score threshold instead of the "
                                                       "artifact's.")
    contamination: Contamination = Field(
        None, description="Label with the threshold for this contamination (0-0.5 or 'auto'), from the "
                          "artifact's fit-score quantiles.")
    model: str | None = Field(None, description="Which loaded model scores the request (default: the first).")


class ScoreRequest(ScoreOptions):
    """Give ``rows`` (records or value lists) or ``columns`` (feature -> values), not both."""

    rows: list[Row] | None = Field(None, description="Records {feature: number} or lists in feature order.")
    columns: dict[str, list[Number]] | None = Field(None, description="Column-oriented input: feature -> "
                                                                      "values.")


class ScoreResult(BaseModel):
    score: float = Field(description="Anomaly score; higher is more anomalous.")
    label: int = Field(description="1 when score > threshold, else 0.")
    probability: float = Field(description="Score min-max scaled by the fit-set range, clipped to [0, 1].")
    contributions: dict[str, float] | None = Field(None, description="Per-feature terms (with explain=true).")


class ScoreResponse(BaseModel):
    results: list[ScoreResult] = Field(description="One result per input row, in input order.")
    threshold: float
    model: str
    version: str


class ErrorResponse(BaseModel):
    error: str = Field(description="One sentence naming the problem.")
    detail: list[dict[str, Any]] | None = None
