"""The reference endpoint of ``aeguard bench-serve``: the HTTP ceiling for scoring one artifact in Python.

A plain Starlette app under uvicorn (uvloop, httptools) that loads the same artifact with the same onnxruntime
session settings as the service and does nothing else: orjson (or pyarrow / numpy) in, ``session.run``,
labels and probabilities, orjson (or Arrow) out. No validation, no limits, no API key, no metrics: what the
service adds on top of this is what ``bench-serve`` measures. Not for production use.

``python -m aeguard.serving.reference ARTIFACT --port 3001 [--workers N]``
"""

from __future__ import annotations

import argparse
import io
import os
from operator import itemgetter
from typing import Any

import numpy as np

from aeguard.core import thresholds as th
from aeguard.serving.inputs import ARROW_MEDIA, NPY_MEDIA

ENV_ARTIFACT = "AEGUARD_REFERENCE_ARTIFACT"


def _matrix(body: bytes, media: str, names: list[str]) -> np.ndarray:
    import orjson

    if media == ARROW_MEDIA:
        import pyarrow as pa

        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all().select(names).combine_chunks()
        return np.asarray(table.to_batches()[0].to_tensor(row_major=True))
    if media == NPY_MEDIA:
        return np.load(io.BytesIO(body), allow_pickle=False)
    obj = orjson.loads(body)
    if "rows" in obj:
        rows = obj["rows"]
        if isinstance(rows[0], dict):
            pick = itemgetter(*names)
            return np.array([pick(r) for r in rows], dtype=np.float64).reshape(len(rows), len(names))
        return np.array(rows, dtype=np.float64)
    if "columns" in obj:
        return np.array([obj["columns"][n] for n in names], dtype=np.float64).T
    order = {f: j for j, f in enumerate(obj["features"])}
    return np.array(obj["values"], dtype=np.float64)[:, [order[n] for n in names]]


def create_app() -> Any:
    """The app for the artifact in ``$AEGUARD_REFERENCE_ARTIFACT`` (a factory, so uvicorn workers can build it)."""
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from aeguard.serving.runtime import load_for_serving

    artifact = load_for_serving(os.environ[ENV_ARTIFACT], device=os.environ.get("AEGUARD_DEVICE", "auto"),
                                threads=int(os.environ.get("AEGUARD_ORT_THREADS", "1")))
    names = artifact.feature_names
    session, input_name = artifact.session, artifact.input_name
    cut, calibration = artifact.threshold_, artifact.calibration_

    async def score(request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip()
        X = _matrix(await request.body(), media, names)
        raw = session.run(["score"], {input_name: X.astype(np.float32)})[0].astype(np.float64)
        labels, prob = th.labels(raw, cut), th.probability(raw, calibration)
        if ARROW_MEDIA in request.headers.get("accept", ""):
            import pyarrow as pa

            table = pa.table({"score": raw, "label": labels, "probability": prob})
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return Response(sink.getvalue().to_pybytes(), media_type=ARROW_MEDIA)
        results = [{"score": s, "label": lab, "probability": p}
                   for s, lab, p in zip(raw.tolist(), labels.tolist(), prob.tolist())]
        return Response(orjson.dumps({"results": results, "threshold": cut}), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/readyz", ready)])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ[ENV_ARTIFACT] = args.artifact
    uvicorn.run("aeguard.serving.reference:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, loop="uvloop", http="httptools", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
