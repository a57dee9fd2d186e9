"""Pydantic request and response models of the scoring API: they define the published OpenAPI schema.

The hot path does not parse requests with these models (see :mod:`aeguard.serving.inputs`, which applies
the same rules in one vectorised check); they document the API, validate ``/score_csv`` forms, and serve
BentoML's in-process callers. Numbers are strict: ``"1.5"``, ``true`` and ``null`` are rejected rather than
coerced, so a string in a feature column is a 400 that names the cell, not a silently converted value.

:func:`extend_openapi` adds what BentoML cannot express for ``POST /score``: the Arrow and ``.npy`` request
bodies, the query-string options, and the Arrow response.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag

from aeguard.serving.inputs import ARROW_MEDIA, NPY_MEDIA

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
    components: Annotated[bool, Strict()] = Field(
        False, description="Add every named component output of the graph besides score and contributions "
                           "(e.g. error, uncertainty; integer outputs such as a predicted class stay integers).")
    threshold: Number | None = Field(None, description="Label with this score threshold instead of the "
                                                       "artifact's.")
    contamination: Contamination = Field(
        None, description="Label with the threshold for this contamination (0-0.5 or 'auto'), from the "
                          "artifact's fit-score quantiles.")
    model: str | None = Field(None, description="Which loaded model scores the request (default: the first).")


class ScoreRequest(ScoreOptions):
    """Give exactly one of ``rows`` (records or value lists), ``columns`` (feature -> values) or ``features``
    + ``values`` (names, then value lists in that order). Options may also come in the query string."""

    rows: list[Row] | None = Field(None, description="Records {feature: number} or lists in feature order.")
    columns: dict[str, list[Number]] | None = Field(None, description="Column-oriented input: feature -> "
                                                                      "values.")
    features: list[str] | None = Field(None, description="Feature names, in the order of each list in values "
                                                         "(any order of the model's features).")
    values: list[list[Number]] | None = Field(None, description="One list of numbers per row, in the order of "
                                                                "features.")
    images: list[list[list[Number]] | list[list[list[Number]]]] | None = Field(
        None, description="Image models only: one nested list per image, C x H x W (or H x W for one channel), "
                          "pixels in the artifact's pixel range (see GET /models).")


class ScoreResult(BaseModel):
    score: float = Field(description="Anomaly score; higher is more anomalous.")
    label: int = Field(description="1 when score > threshold, else 0.")
    probability: float = Field(description="Score min-max scaled by the fit-set range, clipped to [0, 1].")
    contributions: dict[str, float | None] | None = Field(None, description="Per-feature terms (with "
                                                                           "explain=true).")
    map: list[Any] | None = Field(None, description="Image models with explain=true: the per-pixel "
                                                    "contributions, nested C x H x W.")
    components: dict[str, int | float | list[float | int | None] | None] | None = Field(
        None, description="Named component outputs (with components=true): floats, or integers for integer "
                          "outputs such as a predicted class.")


class ScoreResponse(BaseModel):
    results: list[ScoreResult] = Field(description="One result per input row, in input order.")
    threshold: float
    model: str
    version: str


class ErrorResponse(BaseModel):
    error: str = Field(description="One sentence naming the problem.")
    detail: list[dict[str, Any]] | None = None


_BINARY = {"type": "string", "format": "binary"}
#: the options of /score as query parameters (how binary bodies pass them; JSON bodies may too)
QUERY_OPTIONS = [
    {"name": "explain", "in": "query", "required": False, "schema": {"type": "boolean"},
     "description": "Add per-feature contributions."},
    {"name": "components", "in": "query", "required": False, "schema": {"type": "boolean"},
     "description": "Add the named component outputs."},
    {"name": "threshold", "in": "query", "required": False, "schema": {"type": "number"},
     "description": "Label with this score threshold."},
    {"name": "contamination", "in": "query", "required": False,
     "schema": {"oneOf": [{"type": "number", "minimum": 0, "maximum": 0.5}, {"type": "string", "enum": ["auto"]}]},
     "description": "Label with the threshold for this contamination."},
    {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "Which loaded model scores the request."},
]


def extend_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the binary bodies, query options and Arrow response of ``POST /score`` to BentoML's schema."""
    operation = spec.get("paths", {}).get("/score", {}).get("post")
    if not operation:
        return spec
    content = operation.setdefault("requestBody", {}).setdefault("content", {})
    content[ARROW_MEDIA] = {"schema": _BINARY}
    content[NPY_MEDIA] = {"schema": _BINARY}
    operation["parameters"] = [*operation.get("parameters", []), *QUERY_OPTIONS]
    responses = operation.setdefault("responses", {})
    ok = responses.get("200", responses.get(200))
    if ok is not None:
        ok.setdefault("content", {})[ARROW_MEDIA] = {"schema": _BINARY}
    operation["description"] = (operation.get("description") or "") + (
        " Binary bodies: an Arrow IPC stream (columns named by feature) or one .npy array (rows x features in "
        "the manifest's order), options in the query string. Accept: application/vnd.apache.arrow.stream "
        "answers with an Arrow stream (score, label, probability, contributions.<feature>, "
        "components.<name>).")
    spec["paths"]["/score_images"] = {"post": {
        "summary": "Score PNG images (image models)",
        "description": "One or many PNG files as multipart/form-data (any field names), answered in upload order; "
                       "8-bit grayscale or RGB of the model's size. Options in the query string or as text form "
                       "fields; explain=true adds each image's per-pixel map (nested C x H x W).",
        "parameters": list(QUERY_OPTIONS),
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "properties": {"file": {"type": "array", "items": _BINARY}}}}}},
        "responses": {"200": (ok or {"description": "Scores, in upload order."}),
                      "400": {"description": "Not a PNG, wrong size or channels, malformed form."},
                      "413": {"description": "Too many images or too large a body."}},
    }}
    return spec
