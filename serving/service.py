"""The aeguard BentoML service: one or more ONNX artifacts behind ``/score``, ``/score_csv`` and ``/models``.

Request path of ``POST /score``::

    BentoML middleware (metrics, tracing, access log, timeout)
      ->  gate (API key, body size, content type; reads the body)  ->  ``score_route`` (bare ASGI)
      ->  Scorer.handle: orjson / Arrow / .npy body -> strict checks -> 4xx with a message on any problem
      ->  Artifact.run inline in the handler (or the fixed-wait micro-batcher, off by default)
      ->  labels, probabilities (components, contributions) -> orjson or Arrow bytes, in input order

The ``@bentoml.api`` method of ``/score`` publishes the request and response schema and serves in-process
Python callers with the same :class:`~aeguard.serving.scoring.Scorer`; HTTP requests never reach it (the
gate hands them to ``score_route``, see :mod:`aeguard.serving.gate`). ``GET /models`` is a Starlette app
mounted with ``@bentoml.asgi_app``. ``POST /score_images`` (PNG uploads for image models) is a bare ASGI route
handed over by the gate like ``/score``. ``/score_csv`` stays a BentoML API
(multipart parsing) and scores through the same Scorer. Each worker process loads its own onnxruntime
session per model (one intra-op thread, no spinning, see :mod:`aeguard.serving.runtime`); torch is never
imported. Configuration comes from environment variables (see :mod:`aeguard.serving.settings`), so
``aeguard serve``, ``bentoml serve aeguard.serving.service:AeguardService`` and a built bento behave the same.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aeguard.core.artifact import installed_version
from aeguard.serving import inputs
from aeguard.serving.gate import Gate, header, media_type
from aeguard.serving.inputs import RequestError
from aeguard.serving.schemas import ScoreOptions, ScoreRequest, ScoreResponse, extend_openapi
from aeguard.serving.scoring import Scorer, error_body
from aeguard.serving.settings import Settings
from aeguard.serving.store import LoadedModel, load_models

SETTINGS = Settings.from_env()


class ScoreCSVRequest(ScoreOptions):
    """A CSV upload with a header row (form field ``file``); options as further form fields."""

    file: Path


#: this worker's scorer (one service instance per worker process; set when the service starts)
_worker: dict[str, Scorer] = {}


async def score_route(scope: dict[str, Any], body: bytes, send: Any) -> None:
    """``POST /score``, handed over by the gate with the body read (JSON, Arrow or .npy; JSON or Arrow answer).

    A bare ASGI handler rather than a Starlette route: the gate has done the routing and read the body."""
    status, payload, media = await _worker["scorer"].handle(body, media_type(scope), scope.get("query_string", b""),
                                                            header(scope, b"accept"))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def score_images_route(scope: dict[str, Any], body: bytes, send: Any) -> None:
    """``POST /score_images``: PNG files as multipart/form-data (any field names, one or many files), answered
    in upload order; options in the query string or as text form fields (``explain=true``)."""
    scorer = _worker["scorer"]
    try:
        files, options = await read_png_form(scope, body, scorer.settings.max_rows)
        status, payload, media = await scorer.handle_images(files, options, header(scope, b"accept"))
    except RequestError as exc:
        status, payload, media = exc.status, error_body(str(exc)), inputs.JSON_MEDIA
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def read_png_form(scope: dict[str, Any], body: bytes, max_files: int) -> tuple[list[tuple[str, bytes]], str]:
    """The uploaded files (name, bytes) in form order and the text fields as a query string."""
    from urllib.parse import urlencode

    from starlette.datastructures import UploadFile

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({**scope, "app": None}, receive)
    try:
        form = await request.form(max_files=max_files + 1, max_fields=100)
    except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed body
        raise RequestError(f"malformed multipart/form-data body: {exc}") from None
    try:
        files, fields = [], []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((value.filename or key, await value.read()))
            else:
                fields.append((key, value))
    finally:
        await form.close()
    if len(files) > max_files:
        raise RequestError(f"more than {max_files} images in one request (AEGUARD_MAX_ROWS); split them into "
                           "smaller requests", status=413)
    query = scope.get("query_string", b"").decode("latin-1")
    extra = urlencode(fields)
    return files, "&".join(q for q in (query, extra) if q)


async def models_endpoint(request: Request) -> JSONResponse:
    """``GET /models``: the loaded models with their manifests, and this worker's runtime."""
    service = bentoml.get_current_service()
    return JSONResponse(service.describe())


models_app = Starlette(routes=[Route("/models", models_endpoint, methods=["GET"])])


def _reply(status: int, payload: bytes, media_type: str) -> Response:
    return Response(payload, status_code=status, media_type=media_type)


@bentoml.asgi_app(models_app, path="/", name="aeguard-models")
@bentoml.service(
    name="aeguard",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s},
    logging={"access": {"enabled": SETTINGS.access_log,
                        "skip_paths": ["/metrics", "/healthz", "/livez", "/readyz"]}},
    tracing={"excluded_urls": [] if SETTINGS.tracing else ["/score$"]},
)
class AeguardService:
    """Anomaly scoring with aeguard ONNX artifacts (torch-free onnxruntime, scored inline)."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        refs = SETTINGS.artifacts or _bento_models()
        self.models: list[LoadedModel] = load_models(refs, device=SETTINGS.device, threads=SETTINGS.ort_threads,
                                                     spinning=SETTINGS.ort_spinning,
                                                     trusted_keys=SETTINGS.trusted_keys)
        self.scorer = Scorer(self.models, SETTINGS)
        _worker["scorer"] = self.scorer

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    async def score(self, rows: Any = None, columns: Any = None, features: Any = None, values: Any = None,
                    explain: bool = False, components: bool = False, threshold: float | None = None,
                    contamination: Any = None, model: str | None = None, images: Any = None) -> ScoreResponse:
        """Score rows (records or value lists), columns, or features + values; results in input order.

        Over HTTP the gate hands this route to the aeguard app (same Scorer, no pydantic parse per row);
        this method serves the schema and in-process callers."""
        fields = {"rows": rows, "columns": columns, "features": features, "values": values, "explain": explain,
                  "components": components, "threshold": threshold, "contamination": contamination,
                  "model": model, "images": images}
        obj = {k: v for k, v in fields.items() if v is not None}
        try:
            data, options = inputs.split_json_body(obj)
            opts = inputs.parse_options(options)
            loaded = self.scorer.model(opts.model)
            X = inputs.batch_from_json(data, loaded.artifact, self.settings.max_rows)
            return _reply(*await self.scorer.respond(X, loaded, opts))
        except RequestError as exc:
            return _reply(exc.status, error_body(str(exc)), inputs.JSON_MEDIA)

    @bentoml.api(route="/score_csv", input_spec=ScoreCSVRequest)
    async def score_csv(self, file: Path, explain: bool = False, components: bool = False,
                        threshold: float | None = None, contamination: Any = None,
                        model: str | None = None) -> ScoreResponse:
        """Score a CSV upload (header row with the feature names); same output as ``/score``."""
        try:
            opts = inputs.parse_options({"explain": explain, "components": components, "threshold": threshold,
                                         "contamination": contamination, "model": model})
            loaded = self.scorer.model(opts.model)
            X = inputs.matrix_from_csv(file, loaded.artifact.feature_names, self.settings.max_rows)
            return _reply(*await self.scorer.respond(X, loaded, opts))
        except RequestError as exc:
            return _reply(exc.status, error_body(str(exc)), inputs.JSON_MEDIA)

    def describe(self) -> dict[str, Any]:
        return {
            "default": self.models[0].name,
            "models": [m.describe() for m in self.models],
            "limits": {"max_rows": self.settings.max_rows, "max_body_bytes": self.settings.max_body_bytes,
                       "max_batch_rows": self.settings.max_batch_rows},
            "runtime": {"workers": self.settings.workers, "api_key_required": self.settings.api_key is not None,
                        "signatures_required": self.settings.trusted_keys is not None,
                        "torch_loaded": "torch" in sys.modules, "aeguard": installed_version("aeguard"),
                        "bentoml": installed_version("bentoml"),
                        "onnxruntime": installed_version("onnxruntime") or installed_version("onnxruntime-gpu"),
                        "batching": self.scorer.describe(), "event_loop": _event_loop_name(),
                        "http_parser": "httptools" if find_spec("httptools") else "h11"},
        }


def _event_loop_name() -> str:
    import asyncio

    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"


def _bento_models() -> tuple[str, ...]:
    """Without AEGUARD_ARTIFACTS, a service running from a built bento serves the models the bento was built
    with, at exactly the versions it pins (a bento's ``envs`` are not applied by a local ``bentoml serve``)."""
    bento = AeguardService.bento
    return tuple(str(m.tag) for m in bento.info.all_models) if bento is not None else ()


AeguardService.add_asgi_middleware(Gate, api_key=None, api_keys=SETTINGS.api_keys,
                                   max_body_bytes=SETTINGS.max_body_bytes,
                                   hot_routes={"/score": score_route, "/score_images": score_images_route},
                                   openapi=extend_openapi)
