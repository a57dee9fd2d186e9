"""``POST /score`` from request bytes to response bytes: parse, validate, score inline, encode.

No framework here, so the service (behind BentoML) and its tests use exactly the same code. Scoring runs
in the request handler on the event loop: onnxruntime takes tens of microseconds for a small batch, far less
than a hand-off to a thread or to a batching process would cost. The optional :class:`MicroBatcher` joins
concurrent requests with a fixed wait when ``AEGUARD_BATCH_WAIT_MS`` > 0.

Image models (manifest ``input.modality: image``) take ``{"images": [...]}`` JSON bodies here and PNG uploads
at ``POST /score_images`` (:meth:`Scorer.handle_images`); their ``explain`` answer is a ``map`` per image, the
per-pixel contributions nested C x H x W.

Responses are JSON (orjson) or, on ``Accept: application/vnd.apache.arrow.stream``, an Arrow IPC stream with
one row per input row: ``score``, ``label``, ``probability``, then ``contributions.<feature>`` with
``explain`` and ``components.<name>`` with ``components``; threshold, model and version are schema metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeguard.core import thresholds as th
from aeguard.serving import inputs
from aeguard.serving.batching import MicroBatcher, Overloaded
from aeguard.serving.inputs import ARROW_MEDIA, JSON_MEDIA, NPY_MEDIA, Options, RequestError
from aeguard.serving.settings import Settings
from aeguard.serving.store import LoadedModel

#: graph outputs that are not components (the score and the per-feature contributions)
CORE_OUTPUTS = ("score", "contrib")
OVERLOADED = ("server overloaded: the request waited longer than the latency budget (AEGUARD_MAX_LATENCY_MS) "
              "in the micro-batcher; retry later")


@dataclass
class Scored:
    """The graph outputs for one request's rows, and how to label them."""

    model: LoadedModel
    outputs: dict[str, np.ndarray]
    threshold: float
    options: Options

    @property
    def component_names(self) -> list[str]:
        return [k for k in self.outputs if k not in CORE_OUTPUTS]


def error_body(message: str) -> bytes:
    import orjson

    return orjson.dumps({"error": message})


def wants_arrow(accept: str | None) -> bool:
    return bool(accept) and ARROW_MEDIA in accept.lower()


class Scorer:
    """The loaded models of one worker and the scoring path of ``/score`` and ``/score_csv``."""

    def __init__(self, models: Sequence[LoadedModel], settings: Settings) -> None:
        self.models = list(models)
        self.index = {m.name: m for m in self.models}
        self.settings = settings
        self.batchers: dict[str, MicroBatcher] = {}
        if settings.batch_wait_ms > 0:
            self.batchers = {m.name: MicroBatcher(m.artifact.run, settings.batch_wait_ms / 1000.0,
                                                  settings.max_batch_rows, settings.max_latency_ms / 1000.0)
                             for m in self.models}

    def model(self, name: str | None) -> LoadedModel:
        if name is None:
            return self.models[0]
        if name not in self.index:
            raise RequestError(f"unknown model {name!r}; loaded models: {sorted(self.index)}")
        return self.index[name]

    # --- request -> response ---------------------------------------------------------------------------

    async def handle(self, body: bytes, media: str, query: bytes | str = b"",
                     accept: str | None = None) -> tuple[int, bytes, str]:
        """(status, body, media type) for one ``POST /score``; client errors become their 4xx."""
        try:
            if media in (ARROW_MEDIA, NPY_MEDIA):
                options = inputs.parse_options({}, query)
                loaded = self.model(options.model)
                if loaded.artifact.image_shape is not None:
                    raise RequestError("image models take JSON {\"images\": [...]} bodies or PNG files to POST "
                                       "/score_images, not Arrow or .npy tables", status=415)
                read = inputs.matrix_from_arrow if media == ARROW_MEDIA else inputs.matrix_from_npy
                X = read(body, loaded.artifact.feature_names, self.settings.max_rows)
            else:
                data, body_options = inputs.split_json_body(inputs.load_json(body))
                options = inputs.parse_options(body_options, query)
                loaded = self.model(options.model)
                X = inputs.batch_from_json(data, loaded.artifact, self.settings.max_rows)
            return await self.respond(X, loaded, options, accept)
        except RequestError as exc:
            return exc.status, error_body(str(exc)), JSON_MEDIA

    async def handle_images(self, files: Sequence[tuple[str, bytes]], options_query: bytes | str,
                            accept: str | None = None) -> tuple[int, bytes, str]:
        """(status, body, media type) for one ``POST /score_images``: PNG files in upload order."""
        try:
            options = inputs.parse_options({}, options_query)
            loaded = self.model(options.model)
            X = inputs.images_from_pngs(files, loaded.artifact, self.settings.max_rows)
            return await self.respond(X, loaded, options, accept)
        except RequestError as exc:
            return exc.status, error_body(str(exc)), JSON_MEDIA

    async def respond(self, X: np.ndarray, loaded: LoadedModel, options: Options,
                      accept: str | None = None) -> tuple[int, bytes, str]:
        try:
            scored = await self.score(X, loaded, options)
        except Overloaded:
            return 503, error_body(OVERLOADED), JSON_MEDIA
        if wants_arrow(accept):
            return 200, arrow_response(scored), ARROW_MEDIA
        return 200, json_response(scored), JSON_MEDIA

    async def score(self, X: np.ndarray, loaded: LoadedModel, options: Options) -> Scored:
        try:
            cut = loaded.artifact.threshold_for(options.threshold, options.contamination)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        batcher = self.batchers.get(loaded.name)
        outputs = await batcher(X) if batcher is not None else loaded.artifact.run(X)
        score = outputs["score"]
        bad = ~np.isfinite(score)
        if bad.any():
            rows = np.flatnonzero(bad)[:10].tolist()
            raise RequestError(f"the model produced a non-finite score for row(s) {rows}: input values far "
                               "outside the range the model was trained on", status=422)
        return Scored(loaded, outputs, cut, options)

    def describe(self) -> dict[str, Any]:
        batching = {"wait_ms": self.settings.batch_wait_ms, "max_batch_rows": self.settings.max_batch_rows}
        if self.batchers:
            batching["batches"] = {name: {"batches": b.batches, "rows": b.batched_rows}
                                   for name, b in self.batchers.items()}
        return batching


# --- encoders --------------------------------------------------------------------------------------------


def _labels_and_probability(scored: Scored) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    score = scored.outputs["score"].astype(np.float64)
    return score, th.labels(score, scored.threshold), th.probability(score, scored.model.artifact.calibration_)


def component_values(values: np.ndarray) -> list[Any]:
    """One JSON value per row: integers stay integers (a predicted class), floats become float64 (NaN is
    written as null), outputs with more than one value per row become lists."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
    if arr.ndim > 2:
        arr = arr.reshape(len(arr), -1)
    return arr.tolist()


def json_response(scored: Scored) -> bytes:
    import orjson

    score, labels, prob = _labels_and_probability(scored)
    results = [{"score": s, "label": lab, "probability": p}
               for s, lab, p in zip(score.tolist(), labels.tolist(), prob.tolist())]
    image_shape = scored.model.artifact.image_shape
    if scored.options.explain and image_shape is not None:  # images: the per-pixel map, nested C x H x W
        maps = scored.outputs["contrib"].astype(np.float64).reshape(-1, *image_shape).tolist()
        for res, one in zip(results, maps):
            res["map"] = one
    elif scored.options.explain:
        names = scored.model.artifact.feature_names
        contrib = scored.outputs["contrib"].astype(np.float64).tolist()
        for res, row in zip(results, contrib):
            res["contributions"] = dict(zip(names, row))
    if scored.options.components:
        comps = scored.component_names
        columns = [component_values(scored.outputs[name]) for name in comps]
        rows = zip(*columns) if comps else (() for _ in results)
        for res, row in zip(results, rows):
            res["components"] = dict(zip(comps, row))
    return orjson.dumps({"results": results, "threshold": float(scored.threshold), "model": scored.model.name,
                         "version": scored.model.version})


def arrow_response(scored: Scored) -> bytes:
    import pyarrow as pa

    score, labels, prob = _labels_and_probability(scored)
    columns: dict[str, Any] = {"score": score, "label": labels, "probability": prob}
    if scored.options.explain:
        contrib = scored.outputs["contrib"].astype(np.float64)
        for j, name in enumerate(scored.model.artifact.feature_names):
            columns[f"contributions.{name}"] = contrib[:, j]
    if scored.options.components:
        for name in scored.component_names:
            arr = np.asarray(scored.outputs[name])
            if arr.ndim > 1:
                flat = arr.reshape(len(arr), -1)
                columns[f"components.{name}"] = pa.FixedSizeListArray.from_arrays(flat.ravel(), flat.shape[1])
            else:
                columns[f"components.{name}"] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
    metadata = {"threshold": repr(float(scored.threshold)), "model": scored.model.name,
                "version": scored.model.version}
    table = pa.table(columns, metadata=metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
