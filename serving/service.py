"""The aeguard BentoML service: one or more ONNX artifacts behind ``/score``, ``/score_csv`` and ``/models``.

Request path of ``POST /score``::

    gate (API key, body size, content type)  ->  BentoML parses ScoreRequest (strict pydantic)
      ->  score(): model, threshold and rows checked -> 4xx with a message on any problem
      ->  self.to_async._batch(matrix)  (in-process call of a batchable API, ``_batch_explain`` when contributions
          are wanted: BentoML's adaptive batcher joins the rows of concurrent requests into one onnxruntime call
          and splits the results back)
      ->  labels and probabilities for this request's threshold -> JSON in input order

Validation happens before the batcher, so a bad request never shares a batch with good ones. Each worker
process loads its own onnxruntime session per model; torch is never imported. Configuration comes from
environment variables (see :mod:`aeguard.serving.settings`), so ``aeguard serve``, ``bentoml serve
aeguard.serving.service:AeguardService`` and a built bento behave the same.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from bentoml.validators import DType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aeguard.core import thresholds as th
from aeguard.core.artifact import installed_version
from aeguard.serving import inputs
from aeguard.serving.gate import INTERNAL_CALL, Gate
from aeguard.serving.inputs import RequestError
from aeguard.serving.schemas import ScoreOptions, ScoreRequest, ScoreResponse
from aeguard.serving.settings import Settings
from aeguard.serving.store import LoadedModel, load_models

SETTINGS = Settings.from_env()
#: the batchable APIs behind /score; only the service's own in-process client may call them
INTERNAL_ROUTES = ("/_batch", "/_batch_explain")
#: batch layout: column 0 model index, then the features (zero-padded to the widest model)
HEAD = 1
F32_MAX = float(np.finfo(np.float32).max)


class ScoreCSVRequest(ScoreOptions):
    """A CSV upload with a header row (form field ``file``); options as further form fields."""

    file: Path


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def models_endpoint(request: Request) -> JSONResponse:
    """``GET /models``: the loaded models with their manifests, and this worker's runtime."""
    service = bentoml.get_current_service()
    return JSONResponse(service.describe())


models_app = Starlette(routes=[Route("/models", models_endpoint, methods=["GET"])])


@bentoml.asgi_app(models_app, path="/", name="aeguard-models")
@bentoml.service(
    name="aeguard",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s},
    # the in-process client of the batchable route must never recycle its session: BentoML 1.4 closes the old
    # session with requests still in flight (they fail with "Server disconnected" -> 500) every max_requests
    runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9},
    # the internal hop is neither logged, traced nor counted as a request: /score already is
    logging={"access": {"enabled": SETTINGS.access_log,
                        "skip_paths": ["/metrics", "/healthz", "/livez", "/readyz", *INTERNAL_ROUTES]}},
    tracing={"excluded_urls": list(INTERNAL_ROUTES)},
)
class AeguardService:
    """Anomaly scoring with aeguard ONNX artifacts (torch-free onnxruntime, adaptive batching)."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        refs = SETTINGS.artifacts or _bento_models()
        self.models: list[LoadedModel] = load_models(refs, device=SETTINGS.device, threads=SETTINGS.ort_threads())
        self.index = {m.name: i for i, m in enumerate(self.models)}
        self.width = max(m.n_features for m in self.models)

    # --- public routes -------------------------------------------------------------------------------

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    async def score(self, rows: Any = None, columns: Any = None, explain: bool = False,
                    threshold: float | None = None, contamination: Any = None,
                    model: str | None = None) -> ScoreResponse:
        """Score rows (records or value lists) or columns; results in input order."""
        try:
            idx, loaded = self._model(model)
            if (rows is None) == (columns is None):
                raise RequestError("give exactly one of 'rows' (a list of records) or 'columns' "
                                   "(feature -> list of values)")
            names = loaded.artifact.feature_names
            if rows is not None:
                X = inputs.matrix_from_rows(rows, names, self.settings.max_rows)
            else:
                X = inputs.matrix_from_columns(columns, names, self.settings.max_rows)
            return await self._score(idx, loaded, X, explain, threshold, contamination)
        except RequestError as exc:
            return _error(exc)

    @bentoml.api(route="/score_csv", input_spec=ScoreCSVRequest)
    async def score_csv(self, file: Path, explain: bool = False, threshold: float | None = None,
                        contamination: Any = None, model: str | None = None) -> ScoreResponse:
        """Score a CSV upload (header row with the feature names); same output as ``/score``."""
        try:
            idx, loaded = self._model(model)
            X = inputs.matrix_from_csv(file, loaded.artifact.feature_names, self.settings.max_rows)
            return await self._score(idx, loaded, X, explain, threshold, contamination)
        except RequestError as exc:
            return _error(exc)

    # --- the batchable core --------------------------------------------------------------------------

    @bentoml.api(route=INTERNAL_ROUTES[0], batchable=True, max_batch_size=SETTINGS.max_batch_rows,
                 max_latency_ms=SETTINGS.max_latency_ms)
    def _batch(self, x: Annotated[np.ndarray, DType("float32")]) -> np.ndarray:
        """Internal (answers 404 from outside): scores for a batch joined from several requests.

        Column 0 is the model index, then the features (zero-padded to the widest model); returns the scores.
        """
        return self._run(x, explain=False)

    @bentoml.api(route=INTERNAL_ROUTES[1], batchable=True, max_batch_size=SETTINGS.max_batch_rows,
                 max_latency_ms=SETTINGS.max_latency_ms)
    def _batch_explain(self, x: Annotated[np.ndarray, DType("float32")]) -> np.ndarray:
        """Internal (answers 404 from outside): like ``_batch``, with the per-feature contributions after the
        score (a separate route, so that batches without ``explain`` do not carry them back)."""
        return self._run(x, explain=True)

    def _run(self, x: np.ndarray, explain: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        out = np.zeros((len(x), 1 + self.width if explain else 1), dtype=np.float32)
        which = x[:, 0].astype(np.int64)
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            loaded = self.models[int(k)]
            res = loaded.artifact.run(x[sel, HEAD:HEAD + loaded.n_features])
            out[sel, 0] = res["score"]
            if explain:
                out[sel, 1:1 + loaded.n_features] = res["contrib"]
        return out

    # --- helpers -------------------------------------------------------------------------------------

    def _model(self, name: str | None) -> tuple[int, LoadedModel]:
        if name is None:
            return 0, self.models[0]
        if name not in self.index:
            raise RequestError(f"unknown model {name!r}; loaded models: {sorted(self.index)}")
        return self.index[name], self.models[self.index[name]]

    async def _score(self, idx: int, loaded: LoadedModel, X: np.ndarray, explain: bool,
                     threshold: float | None, contamination: Any) -> JSONResponse:
        inputs.check_threshold_args(threshold, contamination)
        try:
            cut = loaded.artifact.threshold_for(threshold, contamination)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        big = np.abs(X) > F32_MAX
        if big.any():
            r, c = (int(v[0]) for v in np.nonzero(big))
            raise RequestError(f"value out of float32 range in row {r}, feature "
                               f"{loaded.artifact.feature_names[c]!r}: the model computes in float32")
        batch = np.zeros((len(X), HEAD + self.width), dtype=np.float32)
        batch[:, 0] = idx
        batch[:, HEAD:HEAD + loaded.n_features] = X
        call = self.to_async._batch_explain if explain else self.to_async._batch
        token = INTERNAL_CALL.set(True)
        try:
            out = np.asarray(await call(batch), dtype=np.float32).reshape(len(X), -1)
        except ServiceUnavailable:
            return JSONResponse({"error": "server overloaded: the request waited longer than the batching latency "
                                          "budget (AEGUARD_MAX_LATENCY_MS); retry later"},
                                status_code=503, headers={"retry-after": "1"})
        finally:
            INTERNAL_CALL.reset(token)
        return self._response(loaded, out, cut, explain)

    def _response(self, loaded: LoadedModel, out: np.ndarray, cut: float, explain: bool) -> JSONResponse:
        score = out[:, 0].astype(np.float64)
        bad = ~np.isfinite(score)
        if bad.any():
            rows = np.flatnonzero(bad)[:10].tolist()
            raise RequestError(f"the model produced a non-finite score for row(s) {rows}: input values far "
                               "outside the range the model was trained on", status=422)
        labels = th.labels(score, cut).tolist()
        prob = th.probability(score, loaded.artifact.calibration_).tolist()
        results = [{"score": s, "label": lab, "probability": p} for s, lab, p in zip(score.tolist(), labels, prob)]
        if explain:
            names = loaded.artifact.feature_names
            contrib = out[:, 1:1 + loaded.n_features].astype(np.float64)
            contrib = np.where(np.isfinite(contrib), contrib, np.nan)
            for res, row in zip(results, contrib.tolist()):
                res["contributions"] = {n: (v if v == v else None) for n, v in zip(names, row)}
        return JSONResponse({"results": results, "threshold": float(cut), "model": loaded.name,
                             "version": loaded.version})

    def describe(self) -> dict[str, Any]:
        return {
            "default": self.models[0].name,
            "models": [m.describe() for m in self.models],
            "limits": {"max_rows": self.settings.max_rows, "max_body_bytes": self.settings.max_body_bytes,
                       "max_batch_rows": self.settings.max_batch_rows},
            "runtime": {"workers": self.settings.workers, "api_key_required": self.settings.api_key is not None,
                        "torch_loaded": "torch" in sys.modules, "aeguard": installed_version("aeguard"),
                        "bentoml": installed_version("bentoml"),
                        "onnxruntime": installed_version("onnxruntime") or installed_version("onnxruntime-gpu")},
        }


def _bento_models() -> tuple[str, ...]:
    """Without AEGUARD_ARTIFACTS, a service running from a built bento serves the models the bento was built
    with, at exactly the versions it pins (a bento's ``envs`` are not applied by a local ``bentoml serve``)."""
    bento = AeguardService.bento
    return tuple(str(m.tag) for m in bento.info.all_models) if bento is not None else ()


AeguardService.add_asgi_middleware(Gate, api_key=SETTINGS.api_key, max_body_bytes=SETTINGS.max_body_bytes,
                                   internal_routes=INTERNAL_ROUTES)
